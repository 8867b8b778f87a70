/*
 * metrics.h - internals of the host-metrics collector (agent/metrics.c),
 * exposed for the unit tests: the InfluxDB line-protocol point buffer and
 * one collection round. The loop itself is metrics_start() in agent.h.
 */
#ifndef METRICS_H
#define METRICS_H

#include <stddef.h>
#include <stdint.h>

/** Points kept while the server is unreachable (telegraf's buffer). */
#define METRICS_BUFFER_MAX	10000
/** Points per POST (telegraf's metric_batch_size). */
#define METRICS_BATCH_MAX	1000

/*
 * A bounded FIFO of line-protocol lines. Every line has a sequence number
 * (first_seq is the number of lines[head]), so a batch in flight can be
 * acknowledged even when older lines were dropped meanwhile.
 */
struct mbuf {
	char			**lines;	/* ring of alloc slots */
	size_t			  cap;
	size_t			  alloc;	/* slots allocated: grows up to cap */
	size_t			  head;
	size_t			  count;
	unsigned long long	  first_seq;
	unsigned long long	  dropped;	/* lines lost to the bound, ever */
};

/**
 * An empty buffer of at most cap lines (cap >= 1). Free with mbuf_free.
 * Its array grows with the lines held and is given back when a delivery
 * empties it, so an idle agent keeps no slots for cap lines.
 */
void mbuf_init(struct mbuf *b, size_t cap);
/** Free every line and the array. */
void mbuf_free(struct mbuf *b);
/** Append line (ownership taken); when full, the oldest line is dropped. */
void mbuf_push(struct mbuf *b, char *line);
/**
 * The oldest lines (at most max), each followed by '\n', as one new string
 * (caller frees), or NULL when the buffer is empty. *end_seq receives the
 * sequence number after the last line included, for mbuf_ack.
 */
char *mbuf_batch(const struct mbuf *b, size_t max, unsigned long long *end_seq);
/** Drop every line whose sequence number is below end_seq (a delivered batch). */
void mbuf_ack(struct mbuf *b, unsigned long long end_seq);

/* Tags every point carries (telegraf's global tags minus agentSecret, W17). */
struct metrics_tags {
	const char	*agent_id;
	const char	*project_id;
	const char	*host;
};

/**
 * One collection round into b, all points stamped ts_ns (ns since the
 * epoch): cpu (from the second round on: usage is a difference), mem, swap,
 * disk, diskio, net, kernel, processes, system. Returns the points added.
 */
int metrics_collect(struct mbuf *b, const struct metrics_tags *tags, int64_t ts_ns);

/**
 * A float the way telegraf writes it (strconv 'f', -1): the shortest
 * decimal that reads back as v, never an exponent. Into buf (size bytes).
 */
void metrics_format_float(double v, char *buf, size_t size);

#endif
