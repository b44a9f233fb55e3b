// Backward warping of a batch of images by a dense flow, bilinear, border replicated.
//
// Shapes (row-major, contiguous):
//   image  (N, H, W)     float32
//   flow   (N, 2, H, W)  float32, channel 0 = dx, channel 1 = dy, pixels, y pointing down
//   out    (N, H, W)     float32
// Convention: out[n, y, x] = image[n, y + dy, x + dx], i.e. the second frame of a pair pulled back
// onto the grid of the first (the "I1(x + u)" term of TV-L1). Sample positions outside the image
// are clamped to the border, as OpenCV's remap with BORDER_REPLICATE does.
//
// One thread per output pixel; blocks cover (W, H) tiles and gridDim.z runs over the batch.

extern "C" __global__ void warp_bilinear(const float* __restrict__ image,
                                         const float* __restrict__ flow,
                                         float* __restrict__ out,
                                         const int height, const int width) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    const int n = blockIdx.z;
    if (x >= width || y >= height) return;

    const long plane = (long)height * width;
    const long pixel = (long)y * width + x;
    const float* img = image + n * plane;
    const float dx = flow[(2 * n) * plane + pixel];
    const float dy = flow[(2 * n + 1) * plane + pixel];

    const float sx = fminf(fmaxf(x + dx, 0.0f), (float)(width - 1));
    const float sy = fminf(fmaxf(y + dy, 0.0f), (float)(height - 1));
    const int x0 = (int)floorf(sx);
    const int y0 = (int)floorf(sy);
    const int x1 = min(x0 + 1, width - 1);
    const int y1 = min(y0 + 1, height - 1);
    const float ax = sx - x0;
    const float ay = sy - y0;

    const float top = (1.0f - ax) * img[y0 * width + x0] + ax * img[y0 * width + x1];
    const float bottom = (1.0f - ax) * img[y1 * width + x0] + ax * img[y1 * width + x1];
    out[n * plane + pixel] = (1.0f - ay) * top + ay * bottom;
}
