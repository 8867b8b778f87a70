/*
 * metrics.c - the native host-metrics collector (agent-behaviour §10,
 * protocol §7.11 (a)) that replaces GoAgent's embedded telegraf.
 *
 * Every P_METRICS (60 s) one round reads /proc and statvfs() and appends
 * InfluxDB line-protocol points to a bounded buffer (METRICS_BUFFER_MAX,
 * oldest dropped first, as telegraf's buffer does); then the buffer is
 * POSTed in batches of METRICS_BATCH_MAX to
 * EP_METRIX "/write?db=agentMetrix" until it is empty or a POST fails (the
 * points stay for the next round). Measurement, field and tag names are
 * telegraf's (inputs cpu, mem, swap, disk, diskio, net, kernel, processes,
 * system), so the server's charts keep working.
 *
 * Deliberate differences from GoAgent (W17, W27): no telegraf.conf holding
 * the secret is written (a stale one is removed), the secret key is not a
 * tag (points carry agentId, projectId and host), and the gateway a
 * heartbeat delivers is used at once (the shared HTTP client follows it).
 * Also: diskio leaves out devices that never did any I/O, and net leaves out
 * telegraf's interface=all protocol counters; see docs/pipeline.md.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <ifaddrs.h>
#include <limits.h>
#include <math.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <utmpx.h>

#include "agent.h"
#include "ev.h"
#include "fsutil.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#define WRITE_PATH	EP_METRIX "/write?db=agentMetrix"
#define PROC_FILE_MAX	((size_t)4 << 20)
#define MBUF_MIN_SLOTS	64	/* first array; kept when emptied */
#define METRICS_SLACK_MS 5000	/* a round may run this late (timer_set_slack) */

/* ------------------------------------------------------------ buffer */

/* An empty bounded buffer. */
void
mbuf_init(struct mbuf *b, size_t cap)
{
	memset(b, 0, sizeof(*b));
	b->cap = cap > 0 ? cap : 1;
}

/* Make room for one more line: a larger array, the ring laid out from 0. */
static void
mbuf_grow(struct mbuf *b)
{
	size_t n = b->alloc < MBUF_MIN_SLOTS / 2 ? MBUF_MIN_SLOTS : b->alloc * 2, i;
	char **lines;

	if (n > b->cap)
		n = b->cap;
	lines = xcalloc(n, sizeof(*lines));
	for (i = 0; i < b->count; i++)
		lines[i] = b->lines[(b->head + i) % b->alloc];
	free(b->lines);
	b->lines = lines;
	b->alloc = n;
	b->head = 0;
}

/* Free every buffered line. */
void
mbuf_free(struct mbuf *b)
{
	size_t i;

	for (i = 0; i < b->count; i++)
		free(b->lines[(b->head + i) % b->alloc]);
	free(b->lines);
	memset(b, 0, sizeof(*b));
}

/* Append a line; the oldest goes when full (telegraf drops oldest too). */
void
mbuf_push(struct mbuf *b, char *line)
{
	if (b->count == b->cap) {
		free(b->lines[b->head]);
		b->head = (b->head + 1) % b->alloc;
		b->count--;
		b->first_seq++;
		b->dropped++;
	}
	if (b->count == b->alloc)
		mbuf_grow(b);
	b->lines[(b->head + b->count) % b->alloc] = line;
	b->count++;
}

/* The oldest lines as one POST body. */
char *
mbuf_batch(const struct mbuf *b, size_t max, unsigned long long *end_seq)
{
	size_t n = b->count < max ? b->count : max, i, len = 0, off = 0;
	char *body;

	*end_seq = b->first_seq;
	if (n == 0)
		return NULL;
	for (i = 0; i < n; i++)
		len += strlen(b->lines[(b->head + i) % b->alloc]) + 1;
	body = xmalloc(len + 1);
	for (i = 0; i < n; i++) {
		const char *l = b->lines[(b->head + i) % b->alloc];
		size_t k = strlen(l);
		memcpy(body + off, l, k);
		off += k;
		body[off++] = '\n';
	}
	body[off] = '\0';
	*end_seq = b->first_seq + n;
	return body;
}

/* Forget the lines of a delivered batch. */
void
mbuf_ack(struct mbuf *b, unsigned long long end_seq)
{
	while (b->count > 0 && b->first_seq < end_seq) {
		free(b->lines[b->head]);
		b->lines[b->head] = NULL;
		b->head = (b->head + 1) % b->alloc;
		b->count--;
		b->first_seq++;
	}
	if (b->count == 0 && b->alloc > MBUF_MIN_SLOTS) {
		/* delivered after a backlog: give the large array back */
		free(b->lines);
		b->lines = NULL;
		b->alloc = 0;
		b->head = 0;
	}
}

/* ------------------------------------------------------------ line protocol */

struct lp {
	char		*buf;
	size_t		 len, cap;
	int		 nfields;
	const struct metrics_tags *tags;
	struct mbuf	*out;
	int64_t		 ts;
	int		 points;
};

/* Append n bytes. */
static void
lp_put(struct lp *l, const char *s, size_t n)
{
	if (l->len + n + 1 > l->cap) {
		l->cap = (l->len + n + 1) * 2;
		l->buf = xrealloc(l->buf, l->cap);
	}
	memcpy(l->buf + l->len, s, n);
	l->len += n;
	l->buf[l->len] = '\0';
}

/*
 * Append s with a backslash before every character of special; control
 * characters (a newline would end the line) become '_'.
 */
static void
lp_put_escaped(struct lp *l, const char *s, const char *special)
{
	for (; *s; s++) {
		char c = *s;
		if ((unsigned char)c < 0x20 || c == 0x7f)
			c = '_';
		if (strchr(special, c) != NULL)
			lp_put(l, "\\", 1);
		lp_put(l, &c, 1);
	}
}

/* qsort order of tag pairs: by key. */
static int
tag_cmp(const void *a, const void *b)
{
	return strcmp(((const char *const *)a)[0], ((const char *const *)b)[0]);
}

/*
 * Start a point: measurement, the global tags plus extra (key, value,
 * ..., NULL), sorted by key as telegraf sends them; empty values are left
 * out (line protocol has no empty tag value).
 */
static void
point_begin(struct lp *l, const char *measurement, const char *const *extra)
{
	const char *pairs[16][2];
	size_t n = 0, i;

	l->len = 0;
	l->nfields = 0;
	lp_put_escaped(l, measurement, ", ");
	pairs[n][0] = "agentId"; pairs[n++][1] = l->tags->agent_id;
	pairs[n][0] = "projectId"; pairs[n++][1] = l->tags->project_id;
	pairs[n][0] = "host"; pairs[n++][1] = l->tags->host;
	for (i = 0; extra != NULL && extra[i] != NULL && extra[i + 1] != NULL &&
	    n < nitems(pairs); i += 2) {
		pairs[n][0] = extra[i];
		pairs[n++][1] = extra[i + 1];
	}
	qsort(pairs, n, sizeof(pairs[0]), tag_cmp);
	for (i = 0; i < n; i++) {
		if (pairs[i][1] == NULL || pairs[i][1][0] == '\0')
			continue;
		lp_put(l, ",", 1);
		lp_put_escaped(l, pairs[i][0], ",= ");
		lp_put(l, "=", 1);
		lp_put_escaped(l, pairs[i][1], ",= ");
	}
}

/* Separator and escaped key of the next field. */
static void
field_key(struct lp *l, const char *k)
{
	lp_put(l, l->nfields++ == 0 ? " " : ",", 1);
	lp_put_escaped(l, k, ",= ");
	lp_put(l, "=", 1);
}

/* An integer field ("123i"). */
static void
field_int(struct lp *l, const char *k, long long v)
{
	char num[32];
	int n = snprintf(num, sizeof(num), "%lldi", v);

	field_key(l, k);
	lp_put(l, num, (size_t)n);
}

/* An unsigned counter, written as an integer (telegraf without uint support). */
static void
field_uint(struct lp *l, const char *k, unsigned long long v)
{
	field_int(l, k, v > (unsigned long long)LLONG_MAX ? LLONG_MAX : (long long)v);
}

/* Shortest round-trip decimal, no exponent (Go's 'f', -1). */
void
metrics_format_float(double v, char *buf, size_t size)
{
	int p;

	for (p = 1; p <= 17; p++) {
		snprintf(buf, size, "%.*g", p, v);
		if (strtod(buf, NULL) == v)
			break;
	}
	if (strchr(buf, 'e') != NULL || strchr(buf, 'E') != NULL) {
		/* No exponent: fixed notation, trailing zeros trimmed. */
		char *dot;
		snprintf(buf, size, "%.20f", v);
		if ((dot = strchr(buf, '.')) != NULL) {
			char *end = buf + strlen(buf) - 1;
			while (end > dot && *end == '0')
				*end-- = '\0';
			if (end == dot)
				*end = '\0';
		}
	}
}

/* A float field; NaN and infinities are left out (not representable). */
static void
field_float(struct lp *l, const char *k, double v)
{
	char num[400];

	if (!isfinite(v))
		return;
	metrics_format_float(v, num, sizeof(num));
	field_key(l, k);
	lp_put(l, num, strlen(num));
}

/* A string field: "..." with '"' and '\' escaped. */
static void
field_str(struct lp *l, const char *k, const char *v)
{
	field_key(l, k);
	lp_put(l, "\"", 1);
	for (; *v; v++) {
		if (*v == '"' || *v == '\\')
			lp_put(l, "\\", 1);
		if (*v == '\n')
			lp_put(l, "\\n", 2);
		else
			lp_put(l, v, 1);
	}
	lp_put(l, "\"", 1);
}

/* Finish the point (timestamp) and move it into the buffer. */
static void
point_end(struct lp *l)
{
	char num[32];
	int n;

	if (l->nfields == 0)
		return;
	n = snprintf(num, sizeof(num), " %lld", (long long)l->ts);
	lp_put(l, num, (size_t)n);
	mbuf_push(l->out, xstrndup(l->buf, l->len));
	l->points++;
}

/* ------------------------------------------------------------ /proc readers */

/* Read a /proc file (size unknown up front). New string or NULL. */
static char *
proc_read(const char *path)
{
	char *buf = NULL;

	if (fs_read_file(path, PROC_FILE_MAX, &buf, NULL) == -1)
		return NULL;
	return buf;
}

/* The unsigned number after "key" at a line start in text; 0 when absent. */
static unsigned long long
line_value(const char *text, const char *key, int *found)
{
	size_t kl = strlen(key);
	const char *p = text;

	while (p != NULL && *p) {
		if (strncmp(p, key, kl) == 0 && (p[kl] == ' ' || p[kl] == '\t' ||
		    p[kl] == ':')) {
			if (found != NULL)
				*found = 1;
			return strtoull(p + kl + 1 + strspn(p + kl + 1, " \t"), NULL, 10);
		}
		p = strchr(p, '\n');
		if (p != NULL)
			p++;
	}
	if (found != NULL)
		*found = 0;
	return 0;
}

/*
 * Parse up to max blank-separated unsigned numbers of s into v (strtoull:
 * sscanf cannot report conversion errors). Returns how many were read.
 */
static int
parse_ulls(const char *s, unsigned long long *v, int max)
{
	int n = 0;

	while (n < max) {
		char *end;
		s += strspn(s, " \t");
		if (!isdigit((unsigned char)*s))
			break;
		v[n++] = strtoull(s, &end, 10);
		s = end;
	}
	return n;
}

/* ------------------------------------------------------------ cpu */

#define CPU_FIELDS 10	/* user nice system idle iowait irq softirq steal guest guest_nice */

struct cpu_sample {
	int			 have;
	unsigned long long	 v[CPU_FIELDS];
};

static struct cpu_sample *cpu_prev;	/* [0] = total, [n + 1] = cpuN */
static size_t cpu_nprev;

/* cpu: usage percentages since the previous round (telegraf's formulas). */
static void
collect_cpu(struct lp *l, const char *stat)
{
	static const char *names[CPU_FIELDS] = { "usage_user", "usage_nice",
	    "usage_system", "usage_idle", "usage_iowait", "usage_irq",
	    "usage_softirq", "usage_steal", "usage_guest", "usage_guest_nice" };
	const char *p = stat;

	while (p != NULL && str_starts(p, "cpu")) {
		struct cpu_sample cur, *prev;
		char label[32], *end;
		size_t idx, i;
		const char *q = p + 3;

		memset(&cur, 0, sizeof(cur));
		if (*q == ' ') {
			idx = 0;
			snprintf(label, sizeof(label), "cpu-total");
		} else {
			unsigned long n = strtoul(q, &end, 10);
			if (end == q || n > 65535)
				goto next;
			idx = n + 1;
			snprintf(label, sizeof(label), "cpu%lu", n);
			q = end;
		}
		for (i = 0; i < CPU_FIELDS; i++) {
			cur.v[i] = strtoull(q, &end, 10);
			if (end == q)
				break;
			q = end;
		}
		cur.have = 1;
		if (idx >= cpu_nprev) {
			cpu_prev = xrealloc(cpu_prev, (idx + 1) * sizeof(*cpu_prev));
			memset(cpu_prev + cpu_nprev, 0, (idx + 1 - cpu_nprev) *
			    sizeof(*cpu_prev));
			cpu_nprev = idx + 1;
		}
		prev = &cpu_prev[idx];
		if (prev->have) {
			/* total excludes guest time, which "user" already holds */
			double total = 0, last = 0, d[CPU_FIELDS];
			for (i = 0; i < 8; i++) {
				total += (double)cur.v[i];
				last += (double)prev->v[i];
			}
			for (i = 0; i < CPU_FIELDS; i++)
				d[i] = (double)cur.v[i] - (double)prev->v[i];
			d[0] -= d[8];	/* user without guest */
			d[1] -= d[9];	/* nice without guest_nice */
			if (total - last > 0) {
				const char *tags[] = { "cpu", label, NULL };
				point_begin(l, "cpu", tags);
				for (i = 0; i < CPU_FIELDS; i++)
					field_float(l, names[i], 100 * d[i] / (total - last));
				point_end(l);
			}
		}
		*prev = cur;
next:
		p = strchr(p, '\n');
		if (p != NULL)
			p++;
	}
}

/* ------------------------------------------------------------ mem, swap */

/* mem and swap from /proc/meminfo (gopsutil's derivations, kB -> bytes). */
static void
collect_mem(struct lp *l)
{
	static const struct {
		const char *field, *key;
	} plain[] = {
		{ "active", "Active" }, { "commit_limit", "CommitLimit" },
		{ "committed_as", "Committed_AS" }, { "dirty", "Dirty" },
		{ "free", "MemFree" }, { "high_free", "HighFree" },
		{ "high_total", "HighTotal" }, { "huge_page_size", "Hugepagesize" },
		{ "inactive", "Inactive" }, { "low_free", "LowFree" },
		{ "low_total", "LowTotal" }, { "mapped", "Mapped" },
		{ "page_tables", "PageTables" }, { "shared", "Shmem" },
		{ "slab", "Slab" }, { "sreclaimable", "SReclaimable" },
		{ "sunreclaim", "SUnreclaim" }, { "swap_cached", "SwapCached" },
		{ "swap_free", "SwapFree" }, { "swap_total", "SwapTotal" },
		{ "vmalloc_chunk", "VmallocChunk" }, { "vmalloc_total", "VmallocTotal" },
		{ "vmalloc_used", "VmallocUsed" }, { "write_back", "Writeback" },
		{ "write_back_tmp", "WritebackTmp" },
	};
	char *mi = proc_read("/proc/meminfo"), *vm;
	unsigned long long total, free_, buffers, cached, avail, used, stotal, sfree;
	long page = sysconf(_SC_PAGESIZE);
	int has_avail = 0;
	size_t i;

	if (mi == NULL)
		return;
	total = line_value(mi, "MemTotal", NULL) * 1024;
	free_ = line_value(mi, "MemFree", NULL) * 1024;
	buffers = line_value(mi, "Buffers", NULL) * 1024;
	cached = (line_value(mi, "Cached", NULL) +
	    line_value(mi, "SReclaimable", NULL)) * 1024;
	avail = line_value(mi, "MemAvailable", &has_avail) * 1024;
	if (!has_avail)
		avail = free_ + buffers + cached;
	used = total - free_ - buffers - cached;
	if (free_ + buffers + cached > total)
		used = total - free_;
	point_begin(l, "mem", NULL);
	for (i = 0; i < nitems(plain); i++) {
		unsigned long long v = line_value(mi, plain[i].key, NULL);
		field_uint(l, plain[i].field, v * 1024);
	}
	field_uint(l, "available", avail);
	field_float(l, "available_percent", total ? 100.0 * (double)avail / (double)total : 0);
	field_uint(l, "buffered", buffers);
	field_uint(l, "cached", cached);
	field_uint(l, "huge_pages_free", line_value(mi, "HugePages_Free", NULL));
	field_uint(l, "huge_pages_total", line_value(mi, "HugePages_Total", NULL));
	field_uint(l, "total", total);
	field_uint(l, "used", used);
	field_float(l, "used_percent", total ? 100.0 * (double)used / (double)total : 0);
	point_end(l);

	stotal = line_value(mi, "SwapTotal", NULL) * 1024;
	sfree = line_value(mi, "SwapFree", NULL) * 1024;
	point_begin(l, "swap", NULL);
	field_uint(l, "free", sfree);
	if ((vm = proc_read("/proc/vmstat")) != NULL) {
		field_uint(l, "in", line_value(vm, "pswpin", NULL) * (unsigned long long)page);
		field_uint(l, "out", line_value(vm, "pswpout", NULL) * (unsigned long long)page);
		free(vm);
	}
	field_uint(l, "total", stotal);
	field_uint(l, "used", stotal - sfree);
	field_float(l, "used_percent", stotal ? 100.0 * (double)(stotal - sfree) /
	    (double)stotal : 0);
	point_end(l);
	free(mi);
}

/* ------------------------------------------------------------ disk */

/* Undo the octal escapes of /proc/self/mounts (\040 = space) in place. */
static void
unescape_mount(char *s)
{
	char *o = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' &&
		    s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
}

/* 1 when fstype is in telegraf's ignore_fs or is a "nodev" file system. */
static int
fs_ignored(const char *fstype, const char *filesystems)
{
	static const char *ignore[] = { "tmpfs", "devtmpfs", "devfs", "overlay",
	    "aufs", "squashfs" };
	const char *p = filesystems;
	size_t i, fl = strlen(fstype);

	for (i = 0; i < nitems(ignore); i++)
		if (strcmp(fstype, ignore[i]) == 0)
			return 1;
	/* gopsutil's Partitions(all=false) keeps only device-backed types. */
	while (p != NULL && *p) {
		if (str_starts(p, "nodev")) {
			const char *t = p + 5 + strspn(p + 5, " \t");
			if (strncmp(t, fstype, fl) == 0 && (t[fl] == '\n' || t[fl] == '\0'))
				return 1;
		}
		p = strchr(p, '\n');
		if (p != NULL)
			p++;
	}
	return 0;
}

/* 1 when the comma-separated mount options hold "ro". */
static int
mount_readonly(const char *opts)
{
	size_t n;

	while (*opts) {
		n = strcspn(opts, ",");
		if (n == 2 && strncmp(opts, "ro", 2) == 0)
			return 1;
		opts += n;
		if (*opts == ',')
			opts++;
	}
	return 0;
}

/* disk: statvfs of every device-backed mount (telegraf's disk filter). */
static void
collect_disk(struct lp *l)
{
	char *mounts = proc_read("/proc/self/mounts");
	char *fss = proc_read("/proc/filesystems");
	char **dev = NULL, **mnt = NULL, **type = NULL, **opts = NULL;
	char *line, *next;
	size_t n = 0, i, j;

	if (mounts == NULL) {
		free(fss);
		return;
	}
	for (line = mounts; line != NULL && *line; line = next) {
		char *f[4], *save = NULL;
		int k;
		next = strchr(line, '\n');
		if (next != NULL)
			*next++ = '\0';
		for (k = 0; k < 4; k++)
			if ((f[k] = strtok_r(k == 0 ? line : NULL, " ", &save)) == NULL)
				break;
		if (k < 4)
			continue;
		dev = xrealloc(dev, (n + 1) * sizeof(*dev));
		mnt = xrealloc(mnt, (n + 1) * sizeof(*mnt));
		type = xrealloc(type, (n + 1) * sizeof(*type));
		opts = xrealloc(opts, (n + 1) * sizeof(*opts));
		unescape_mount(f[0]);
		unescape_mount(f[1]);
		dev[n] = f[0]; mnt[n] = f[1]; type[n] = f[2]; opts[n] = f[3];
		n++;
	}
	for (i = 0; i < n; i++) {
		struct statvfs sv;
		unsigned long long total, free_, used;
		const char *device;
		int shadowed = 0;

		/* A later mount on the same path hides this one. */
		for (j = i + 1; j < n && !shadowed; j++)
			shadowed = strcmp(mnt[i], mnt[j]) == 0;
		if (shadowed || fs_ignored(type[i], fss ? fss : "") ||
		    statvfs(mnt[i], &sv) == -1 || sv.f_blocks == 0)
			continue;
		total = (unsigned long long)sv.f_blocks * sv.f_frsize;
		free_ = (unsigned long long)sv.f_bavail * sv.f_frsize;
		used = (unsigned long long)(sv.f_blocks - sv.f_bfree) * sv.f_frsize;
		device = str_starts(dev[i], "/dev/") ? dev[i] + 5 : dev[i];
		{
			const char *tags[] = { "device", device, "fstype", type[i],
			    "mode", mount_readonly(opts[i]) ? "ro" : "rw",
			    "path", mnt[i], NULL };
			point_begin(l, "disk", tags);
		}
		field_uint(l, "free", free_);
		field_uint(l, "inodes_free", sv.f_ffree);
		field_uint(l, "inodes_total", sv.f_files);
		field_uint(l, "inodes_used", sv.f_files - sv.f_ffree);
		field_uint(l, "total", total);
		field_uint(l, "used", used);
		field_float(l, "used_percent", used + free_ ? 100.0 * (double)used /
		    (double)(used + free_) : 0);
		point_end(l);
	}
	free(dev);
	free(mnt);
	free(type);
	free(opts);
	free(mounts);
	free(fss);
}

/* diskio: /proc/diskstats counters of devices that did any I/O. */
static void
collect_diskio(struct lp *l)
{
	char *ds = proc_read("/proc/diskstats"), *line, *next;

	if (ds == NULL)
		return;
	for (line = ds; line != NULL && *line; line = next) {
		unsigned long long v[11] = { 0 };
		char name[64];
		int k;
		next = strchr(line, '\n');
		if (next != NULL)
			*next++ = '\0';
		/* "major minor name reads merged sectors ms writes ..." */
		{
			unsigned long long mm[2];
			const char *p = line;
			size_t nl;
			k = 0;
			if (parse_ulls(p, mm, 2) == 2) {
				p += strspn(p, " \t");
				p += strcspn(p, " \t");
				p += strspn(p, " \t");
				p += strcspn(p, " \t");
				p += strspn(p, " \t");
				nl = strcspn(p, " \t");
				if (nl > 0 && nl < sizeof(name)) {
					memcpy(name, p, nl);
					name[nl] = '\0';
					k = 1 + parse_ulls(p + nl, v, 11);
				}
			}
		}
		if (k < 12 || (v[0] == 0 && v[4] == 0))
			continue;
		{
			const char *tags[] = { "name", name, NULL };
			point_begin(l, "diskio", tags);
		}
		field_uint(l, "io_time", v[9]);
		field_uint(l, "iops_in_progress", v[8]);
		field_uint(l, "merged_reads", v[1]);
		field_uint(l, "merged_writes", v[5]);
		field_uint(l, "read_bytes", v[2] * 512);
		field_uint(l, "read_time", v[3]);
		field_uint(l, "reads", v[0]);
		field_uint(l, "weighted_io_time", v[10]);
		field_uint(l, "write_bytes", v[6] * 512);
		field_uint(l, "write_time", v[7]);
		field_uint(l, "writes", v[4]);
		point_end(l);
	}
	free(ds);
}

/* ------------------------------------------------------------ net */

/* Interface flags by name from getifaddrs(); -1 when unknown. */
static long
iface_flags(const struct ifaddrs *ifs, const char *name)
{
	const struct ifaddrs *i;

	for (i = ifs; i != NULL; i = i->ifa_next)
		if (i->ifa_name != NULL && strcmp(i->ifa_name, name) == 0)
			return (long)i->ifa_flags;
	return -1;
}

/* net: /proc/net/dev of the interfaces that are up and not loopback. */
static void
collect_net(struct lp *l)
{
	char *nd = proc_read("/proc/net/dev"), *line, *next;
	struct ifaddrs *ifs = NULL;

	if (nd == NULL)
		return;
	if (getifaddrs(&ifs) == -1)
		ifs = NULL;
	for (line = nd; line != NULL && *line; line = next) {
		unsigned long long v[16] = { 0 };
		char *colon, *name;
		long flags;
		int k;
		next = strchr(line, '\n');
		if (next != NULL)
			*next++ = '\0';
		if ((colon = strchr(line, ':')) == NULL)
			continue;	/* header lines */
		*colon = '\0';
		name = str_trim(line);
		k = parse_ulls(colon + 1, v, 16);
		flags = iface_flags(ifs, name);
		if (k < 16 || flags == -1 || (flags & IFF_LOOPBACK) || !(flags & IFF_UP))
			continue;
		{
			const char *tags[] = { "interface", name, NULL };
			point_begin(l, "net", tags);
		}
		field_uint(l, "bytes_recv", v[0]);
		field_uint(l, "bytes_sent", v[8]);
		field_uint(l, "drop_in", v[3]);
		field_uint(l, "drop_out", v[11]);
		field_uint(l, "err_in", v[2]);
		field_uint(l, "err_out", v[10]);
		field_uint(l, "packets_recv", v[1]);
		field_uint(l, "packets_sent", v[9]);
		point_end(l);
	}
	if (ifs != NULL)
		freeifaddrs(ifs);
	free(nd);
}

/* ------------------------------------------------------------ kernel, processes, system */

/* kernel: boot time and counters of /proc/stat. */
static void
collect_kernel(struct lp *l, const char *stat)
{
	char *ent = proc_read("/proc/sys/kernel/random/entropy_avail");
	long long e = 0;

	point_begin(l, "kernel", NULL);
	field_uint(l, "boot_time", line_value(stat, "btime", NULL));
	field_uint(l, "context_switches", line_value(stat, "ctxt", NULL));
	if (ent != NULL && str_to_ll(ent, &e) == 0)
		field_int(l, "entropy_avail", e);
	field_uint(l, "interrupts", line_value(stat, "intr", NULL));
	field_uint(l, "processes_forked", line_value(stat, "processes", NULL));
	point_end(l);
	free(ent);
}

/* processes: states of every /proc/<pid>/stat (telegraf's linux mapping). */
static void
collect_processes(struct lp *l)
{
	long long blocked = 0, dead = 0, idle = 0, paging = 0, parked = 0,
	    running = 0, sleeping = 0, stopped = 0, total = 0, threads = 0,
	    unknown = 0, zombies = 0;
	DIR *d = opendir("/proc");
	struct dirent *e;

	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		char path[300], buf[1024], *p;
		FILE *f;
		size_t n;
		int field;

		if (!isdigit((unsigned char)e->d_name[0]))
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
		if ((f = fopen(path, "re")) == NULL)
			continue;	/* gone meanwhile */
		n = fread(buf, 1, sizeof(buf) - 1, f);
		(void)fclose(f);
		buf[n] = '\0';
		if ((p = strrchr(buf, ')')) == NULL || p[1] != ' ')
			continue;
		p += 2;
		total++;
		switch (*p) {
		case 'R': running++; break;
		case 'S': sleeping++; break;
		case 'D': blocked++; break;
		case 'Z': zombies++; break;
		case 'X': dead++; break;
		case 'T': case 't': stopped++; break;
		case 'W': paging++; break;
		case 'I': idle++; break;
		case 'P': parked++; break;
		default: unknown++; break;
		}
		/* num_threads is field 20; p is at field 3. */
		for (field = 3; field < 20 && p != NULL; field++)
			if ((p = strchr(p, ' ')) != NULL)
				p++;
		if (p != NULL)
			threads += strtoll(p, NULL, 10);
	}
	closedir(d);
	point_begin(l, "processes", NULL);
	field_int(l, "blocked", blocked);
	field_int(l, "dead", dead);
	field_int(l, "idle", idle);
	field_int(l, "paging", paging);
	field_int(l, "parked", parked);
	field_int(l, "running", running);
	field_int(l, "sleeping", sleeping);
	field_int(l, "stopped", stopped);
	field_int(l, "total", total);
	field_int(l, "total_threads", threads);
	field_int(l, "unknown", unknown);
	field_int(l, "zombies", zombies);
	point_end(l);
}

/* CPUs this process may run on (Go's runtime.NumCPU, telegraf's n_cpus). */
static long
cpu_count(void)
{
#ifdef CPU_COUNT
	cpu_set_t set;

	if (sched_getaffinity(0, sizeof(set), &set) == 0)
		return CPU_COUNT(&set);
#endif
	return sysconf(_SC_NPROCESSORS_ONLN);
}

/* system: load, CPUs, logged-in users, uptime. */
static void
collect_system(struct lp *l)
{
	char *la = proc_read("/proc/loadavg"), *up = proc_read("/proc/uptime");
	double load[3] = { 0, 0, 0 };
	long long users = 0, uptime = 0, days, hours, mins;
	struct utmpx *u;
	char fmt[64];
	int have_load;

	have_load = 0;
	if (la != NULL) {
		char *p = la, *end;
		int i;
		for (i = 0; i < 3; i++, p = end) {
			load[i] = strtod(p, &end);
			if (end == p)
				break;
		}
		have_load = i == 3;
	}
	if (up != NULL)
		uptime = (long long)strtod(up, NULL);
	setutxent();
	while ((u = getutxent()) != NULL)
		if (u->ut_type == USER_PROCESS)
			users++;
	endutxent();
	days = uptime / 86400;
	hours = uptime / 3600 % 24;
	mins = uptime / 60 % 60;
	if (days != 0)
		snprintf(fmt, sizeof(fmt), "%lld day%s, %2lld:%02lld", days,
		    days > 1 ? "s" : "", hours, mins);
	else
		snprintf(fmt, sizeof(fmt), "%2lld:%02lld", hours, mins);
	point_begin(l, "system", NULL);
	if (have_load) {
		field_float(l, "load1", load[0]);
		field_float(l, "load15", load[2]);
		field_float(l, "load5", load[1]);
	}
	field_int(l, "n_cpus", cpu_count());
	field_int(l, "n_users", users);
	field_int(l, "uptime", uptime);
	field_str(l, "uptime_format", fmt);
	point_end(l);
	free(la);
	free(up);
}

/* One collection round of every input. */
int
metrics_collect(struct mbuf *b, const struct metrics_tags *tags, int64_t ts_ns)
{
	struct lp l;
	char *stat = proc_read("/proc/stat");

	memset(&l, 0, sizeof(l));
	l.tags = tags;
	l.out = b;
	l.ts = ts_ns;
	if (stat != NULL) {
		collect_cpu(&l, stat);
		collect_kernel(&l, stat);
	}
	collect_mem(&l);
	collect_disk(&l);
	collect_diskio(&l);
	collect_net(&l);
	collect_processes(&l);
	collect_system(&l);
	free(stat);
	free(l.buf);
	return l.points;
}

/* ------------------------------------------------------------ the loop */

static struct mbuf buffer;
static struct timer collect_timer;
static struct metrics_tags tags;
static int send_busy, failing;
static unsigned long long dropped_logged;
/* Last sequence number of the batch in flight (one POST at a time). */
static unsigned long long sending_end_seq;

static void send_batch(void);

/* POST answered: a 2xx (InfluxDB says 204) delivers the batch. */
static void
send_done(struct http_result *r, void *arg)
{
	unsigned long long end_seq = sending_end_seq;

	(void)arg;
	send_busy = 0;
	if (r->ok && r->code >= 200 && r->code < 300) {
		mbuf_ack(&buffer, end_seq);
		if (failing)
			log_info("metrics: delivered again; %zu point(s) still "
			    "buffered", buffer.count);
		failing = 0;
		send_batch();
		return;
	}
	if (r->ok && r->code >= 400 && r->code < 500 && r->code != 408 &&
	    r->code != 429) {
		/* A batch the server rejects would block the buffer for good. */
		log_warnx("metrics: HTTP %ld for a batch: dropped (%.200s)", r->code,
		    r->body ? r->body : "");
		mbuf_ack(&buffer, end_seq);
		return;
	}
	if (!failing)
		log_warnx("metrics: POST failed (%s); keeping up to %d points until "
		    "the server is back", r->ok ? "HTTP error" : r->error,
		    METRICS_BUFFER_MAX);
	failing = 1;
}

/* POST the oldest batch of the buffer. */
static void
send_batch(void)
{
	char *body;

	if (send_busy || buffer.count == 0)
		return;
	/* No per-request allocation: it would leak if the agent exits while
	 * the POST is in flight (http_shutdown drops it without a callback). */
	body = mbuf_batch(&buffer, METRICS_BATCH_MAX, &sending_end_seq);
	if (http_post(WRITE_PATH, "text/plain; charset=utf-8", body, send_done,
	    NULL) == -1) {
		log_warnx("metrics: cannot start the POST");
	} else {
		send_busy = 1;
	}
	free(body);
}

/* One round: collect, then send what the buffer holds. */
static void
collect_tick(void *arg)
{
	int n;

	(void)arg;
	tags.host = A.hostname;
	n = metrics_collect(&buffer, &tags, wall_ms() * 1000000);
	log_debug("metrics: %d point(s) collected, %zu buffered", n, buffer.count);
	if (buffer.dropped > dropped_logged) {
		log_warnx("metrics: buffer full (%d points): %llu oldest point(s) "
		    "dropped", METRICS_BUFFER_MAX, buffer.dropped - dropped_logged);
		dropped_logged = buffer.dropped;
	}
	send_batch();
	timer_set(&collect_timer, agent_period(P_METRICS));
}

/* Start the collector loop (first round at once). */
void
metrics_start(void)
{
	/* GoAgent's telegraf.conf (0666) holds the secret key (W17). */
	if (fs_exists("telegraf.conf")) {
		if (unlink("telegraf.conf") == 0)
			log_info("metrics: removed GoAgent's telegraf.conf, which held "
			    "the secret key");
		else
			log_warn("metrics: cannot remove telegraf.conf");
	}
	if (!A.cfg.collector_on) {
		log_info("metrics collector off (devops.agent.collectorOn=false)");
		return;
	}
	mbuf_init(&buffer, METRICS_BUFFER_MAX);
	tags.agent_id = A.cfg.agent_id;
	tags.project_id = A.cfg.project_id;
	tags.host = A.hostname;
	timer_init(&collect_timer, "metrics", collect_tick, NULL);
	/* idle cost: a round may wait for the next ask's wakeup (counters
	 * are cumulative and time-stamped, so a later round loses nothing) */
	timer_set_slack(&collect_timer, A.fast ? 0 : METRICS_SLACK_MS);
	/* The first round only primes the cpu counters; soon after start. */
	timer_set(&collect_timer, A.fast ? 0 : 1000);
	log_info("metrics collector on: every %lld s to %s", (long long)
	    (agent_period(P_METRICS) / 1000), WRITE_PATH);
}
