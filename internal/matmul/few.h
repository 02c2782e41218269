int gl_few_supported(void);
void gl_few(float *c, long ldc, const float *a, int m, const float *b, long n, long k);
