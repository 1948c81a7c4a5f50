#version 450
// vk_compat_compute: one frame of the persistently mapped ring (output = input * 2 + frame).
layout(local_size_x = 64) in;
layout(set = 0, binding = 0, std430) buffer Ring { uint data[]; };
layout(push_constant) uniform PC { uint in_off; uint out_off; uint frame; } pc;
void main() { uint i = gl_GlobalInvocationID.x; data[pc.out_off + i] = data[pc.in_off + i] * 2u + pc.frame; }
