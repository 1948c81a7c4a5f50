#version 450
// vk_compat_render: position + texture coordinates, offset by a push constant.
layout(location = 0) in vec3 pos;
layout(location = 1) in vec2 uv;
layout(location = 0) out vec2 vuv;
layout(push_constant) uniform PC { vec4 off; } pc;
void main() { vuv = uv; gl_Position = vec4(pos + pc.off.xyz, 1.0); }
