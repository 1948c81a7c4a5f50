#version 450
// vk_compat_compute: specialization constants (local size too), push constants with a device
// address, a pushed set (storage buffer + texel buffer) and an allocated one (storage image + UBO).
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_shader_explicit_arithmetic_types_int64 : require
layout(constant_id = 0) const int LX = 1;
layout(constant_id = 1) const float MUL = 1.0;
layout(constant_id = 2) const bool USE_TEXEL = false;
layout(local_size_x_id = 0) in;
layout(buffer_reference, std430) buffer Ptr { uint v[]; };
layout(set = 0, binding = 0, std430) buffer Out { float o[]; };
layout(set = 0, binding = 1) uniform samplerBuffer tex;
layout(set = 1, binding = 0, rgba8) uniform writeonly image2D img;
layout(set = 1, binding = 1) uniform U { vec4 k; uvec4 words; } u;
layout(push_constant) uniform PC { float add; uint n; uint64_t addr; } pc;
void main() {
  uint i = gl_GlobalInvocationID.x;
  if (i >= pc.n) return;
  float t = USE_TEXEL ? texelFetch(tex, int(i % 64)).x : 1.0;
  o[i] = float(i) * MUL + pc.add + t * u.k.x + float(u.words[i % 4]);
  imageStore(img, ivec2(i % 32, (i / 32) % 32), vec4(float(i % 256) / 255.0, u.k.y, t / 64.0, 1.0));
  if (pc.addr != 0) { Ptr p = Ptr(pc.addr); p.v[i] = i * 3u + 7u; }
}
