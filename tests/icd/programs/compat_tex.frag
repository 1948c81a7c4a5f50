#version 450
// vk_compat_render: a mipmapped texture sampled at a varying level of detail.
layout(location = 0) in vec2 vuv;
layout(location = 0) out vec4 col;
layout(set = 0, binding = 0) uniform sampler2D tex;
void main() { col = textureLod(tex, vuv * 3.0, vuv.x * 4.0) ; }
