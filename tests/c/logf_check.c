/*
 * tt_logf (runtime_c/tt_fmath.h) against the C library's double log on every 5th float in
 * [1, 4096) (the softmax's sum of exponentials lies in [1, classes]). Prints the worst relative
 * error and where; exit 1 above the documented 3e-7.
 */
#include <math.h>
#include <stdio.h>

#include "tt_fmath.h"

int main(void)
{
    double worst = 0.0;
    float at = 1.0f;
    long n = 0;
    for (float x = nextafterf(1.0f, 2.0f); x < 4096.0f; n++) {
        const double want = log((double)x);
        const double rel = fabs((double)tt_logf(x) - want) / want;
        if (rel > worst) {
            worst = rel;
            at = x;
        }
        for (int k = 0; k < 5; k++) {
            x = nextafterf(x, 8192.0f);
        }
    }
    printf("%ld values, worst relative error %.3g at %a\n", n, worst, (double)at);
    return worst < 3e-7 ? 0 : 1;
}
