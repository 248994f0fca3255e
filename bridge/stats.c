/* Histogram bounds of the loop thread's counters (stats_int.h). */
#include "bridge/stats_int.h"

#include <string.h>

/* Up to 30 minutes: latency counts from the publisher's clock, so a
 * notification that waited on the retry ladder for an offline user lands in
 * the upper buckets. */
const double wr_latency_bounds[WR_LATENCY_NBOUNDS] = {0.5,  1,     2,     5,     10,     25,
                                                      50,   100,   250,   500,   1000,   2500,
                                                      5000, 10000, 30000, 60000, 300000, 1800000};

const double wr_loop_bounds[WR_LOOP_NBOUNDS] = {1, 2, 5, 10, 25, 50, 100, 250, 1000};

void wr_bridge_stats_init(wr_bridge_stats_t *st) {
  memset(st, 0, sizeof(*st));
  wr_hist_init(&st->latency, wr_latency_bounds, WR_LATENCY_NBOUNDS);
  wr_hist_init(&st->fanout, wr_loop_bounds, WR_LOOP_NBOUNDS);
  wr_hist_init(&st->loop_busy, wr_loop_bounds, WR_LOOP_NBOUNDS);
  wr_hist_init(&st->loop_cpu, wr_loop_bounds, WR_LOOP_NBOUNDS);
  wr_hist_init(&st->mailbox_replay, wr_latency_bounds, WR_LATENCY_NBOUNDS);
}
