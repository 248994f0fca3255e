/* Histogram bounds of the loop thread's counters (stats_int.h). */
#include "bridge/stats_int.h"

/* Up to 30 minutes: latency counts from the publisher's clock, so a
 * notification that waited on the retry ladder for an offline user lands in
 * the upper buckets. */
const double wr_latency_bounds[WR_LATENCY_NBOUNDS] = {0.5,  1,     2,     5,     10,     25,
                                                      50,   100,   250,   500,   1000,   2500,
                                                      5000, 10000, 30000, 60000, 300000, 1800000};

const double wr_loop_bounds[WR_LOOP_NBOUNDS] = {1, 2, 5, 10, 25, 50, 100, 250, 1000};

void wr_loop_bucket(uint64_t *buckets, double ms) {
  size_t i;
  for (i = 0; i < WR_LOOP_NBOUNDS && ms > wr_loop_bounds[i]; i++)
    ;
  buckets[i]++;
}
