// The second translation unit of two_units_main.cu.
__global__ void second(int *p)
{
    *p += 1;
}

void launch_second(int *d)
{
    second<<<1, 1>>>(d);
}
