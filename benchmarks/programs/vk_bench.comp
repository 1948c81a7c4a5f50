#version 450
// One invocation adds 1 to the first word: the smallest dispatch whose effect can be checked.
layout(local_size_x = 1) in;
layout(std430, set = 0, binding = 0) buffer Counter { uint count; } counter;
void main() {
    counter.count += 1u;
}
