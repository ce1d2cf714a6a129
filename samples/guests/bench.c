// SPDX-License-Identifier: GPL-2.0
#include "rt.h"
void guest_main(void) { printf("BENCH compute n=1 cycles=1 iterations=1\n"); }
