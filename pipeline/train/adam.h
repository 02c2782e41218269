// One Adam step over the first n - n%4 elements of a slice of parameters (see adamStepGo).
void gl_adam(double *restrict w, const double *restrict g, double *restrict m, double *restrict v, long n, double b1,
		double b2, double c1, double c2, double gdecay, double wscale, double step, double isb, double eps);
// gl_adam_supported says whether this CPU has AVX2.
int gl_adam_supported(void);
