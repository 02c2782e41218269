enum { GL_ISA_SSE2 = 1, GL_ISA_AVX2 = 2, GL_ISA_AVX512 = 3 };
int gl_matmul_isa(void);
int gl_abt(int isa, float *c, long ldc, const float *a, long m, const float *b, long n, long k);
