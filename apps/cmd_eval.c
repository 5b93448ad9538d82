/*
 * cmd_eval.c: `tern eval classify -m MODEL --images IDX --labels IDX`:
 * top-1 accuracy and throughput of a classifier on a labelled image set
 * in the IDX format of the MNIST / Fashion-MNIST distribution (unsigned
 * byte images [n][rows][cols], labels [n]). Compressed (.gz) files are
 * recognised and refused with a hint to gunzip them: tern keeps zlib out
 * of its dependencies.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apps/cli.h"
#include "tern/plugin.h"

const char cmd_eval_help[] =
	"usage: tern eval classify -m MODEL --images IDX --labels IDX [--limit N]\n"
	"                          [-t THREADS] [--json] [--predictions FILE]\n"
	"\n"
	"Classifies every image of an IDX image file (MNIST / Fashion-MNIST layout:\n"
	"magic 0x00000803, then n, rows, cols as big-endian u32, then n*rows*cols\n"
	"grey bytes) and compares the top class with the IDX label file (magic\n"
	"0x00000801, n, then n bytes). Prints the top-1 accuracy and images/s\n"
	"(preprocessing included, model loading excluded).\n"
	"The Debian package dataset-fashion-mnist ships the files gzipped in\n"
	"/usr/share/datasets/fashion-mnist: gunzip copies of them first, e.g.\n"
	"  gunzip -c /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz > t10k-images\n"
	"\n"
	"  -m, --model MODEL    model file (its plugin must classify)\n"
	"      --images IDX     image file\n"
	"      --labels IDX     label file\n"
	"  -n, --limit N        only the first N images\n"
	"  -t, --threads N      threads (default: all cores)\n"
	"      --json           print one JSON object instead of text\n"
	"      --predictions FILE  write each image's top class to FILE, one line\n"
	"                       per image in order: the class index (0-based), a\n"
	"                       space, its probability (6 significant digits)\n";

/* Largest IDX file read (1 GiB). */
#define IDX_MAX_BYTES ((size_t)1 << 30)

typedef struct idx_file {
	unsigned char *data;  /* whole file */
	size_t size;
	const unsigned char *items;
	uint32_t n, rows, cols;
} idx_file;

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Read an IDX file of unsigned bytes with `dims` dimensions (1 or 3). */
static int idx_read(const char *path, int dims, idx_file *out)
{
	memset(out, 0, sizeof *out);
	FILE *f = fopen(path, "rb");
	if (!f) {
		cli_error("%s: %s", path, strerror(errno));
		return -1;
	}
	size_t cap = 1 << 20, n = 0;
	unsigned char *buf = malloc(cap);
	while (buf) {
		if (n == cap) {
			unsigned char *p = cap < IDX_MAX_BYTES ? realloc(buf, cap * 2) : NULL;
			if (!p) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = p;
			cap *= 2;
		}
		size_t got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
	}
	int err = ferror(f);
	fclose(f);
	if (!buf || err) {
		free(buf);
		cli_error("%s: %s", path, err ? "read error" : "too large or out of memory");
		return -1;
	}
	out->data = buf;
	out->size = n;
	if (n >= 2 && buf[0] == 0x1f && buf[1] == 0x8b) {
		const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
		size_t bl = strlen(base);
		int keep = bl > 3 && strcmp(base + bl - 3, ".gz") == 0 ? (int)bl - 3 : (int)bl;
		cli_error("%s: gzip-compressed; decompress it first: gunzip -c '%s' > '%.*s%s'", path,
			  path, keep, base, keep == (int)bl ? ".idx" : "");
		return -1;
	}
	const size_t hdr = 4 + 4 * (size_t)dims;
	if (n < hdr) {
		cli_error("%s: truncated IDX header (%zu bytes)", path, n);
		return -1;
	}
	if (buf[0] || buf[1] || buf[2] != 0x08 || buf[3] != dims) {
		cli_error("%s: bad IDX magic %02x%02x%02x%02x (expected 000008%02x: unsigned bytes, "
			  "%d dimension%s)",
			  path, buf[0], buf[1], buf[2], buf[3], dims, dims, dims > 1 ? "s" : "");
		return -1;
	}
	out->n = be32(buf + 4);
	out->rows = dims == 3 ? be32(buf + 8) : 1;
	out->cols = dims == 3 ? be32(buf + 12) : 1;
	if (dims == 3 && (out->rows < 1 || out->cols < 1 || out->rows > 16384 || out->cols > 16384)) {
		cli_error("%s: image size %ux%u out of range", path, out->cols, out->rows);
		return -1;
	}
	/* n < 2^32 and rows*cols < 2^28: the product fits in 64 bits */
	uint64_t need = (uint64_t)out->n * out->rows * out->cols;
	if (need != n - hdr) {
		cli_error("%s: %s: header says %u item%s (%llu bytes of data), file has %zu", path,
			  need > n - hdr ? "truncated" : "trailing bytes", out->n,
			  out->n == 1 ? "" : "s", (unsigned long long)need, n - hdr);
		return -1;
	}
	out->items = buf + hdr;
	return 0;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void json_string(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static int eval_classify(int argc, char **argv)
{
	const char *model = NULL, *images = NULL, *labels = NULL, *preds = NULL, *v;
	long limit = 0, threads = 0;
	bool json = false;
	for (int i = 1; i < argc; i++) {
		int r;
		if (cli_is_help(argv[i])) {
			fputs(cmd_eval_help, stdout);
			return CLI_OK;
		}
		if ((r = cli_flag_value("eval", argc, argv, &i, "-m", "--model", &model)) != 0) {
			if (r < 0)
				return CLI_USAGE;
		} else if ((r = cli_flag_value("eval", argc, argv, &i, NULL, "--images", &images)) != 0) {
			if (r < 0)
				return CLI_USAGE;
		} else if ((r = cli_flag_value("eval", argc, argv, &i, NULL, "--labels", &labels)) != 0) {
			if (r < 0)
				return CLI_USAGE;
		} else if ((r = cli_flag_value("eval", argc, argv, &i, "-n", "--limit", &v)) != 0) {
			if (r < 0 || cli_parse_int("eval", "--limit", v, 1, 0xffffffffL, &limit))
				return CLI_USAGE;
		} else if ((r = cli_flag_value("eval", argc, argv, &i, "-t", "--threads", &v)) != 0) {
			if (r < 0 || cli_parse_int("eval", "--threads", v, 0, CLI_MAX_THREADS, &threads))
				return CLI_USAGE;
		} else if ((r = cli_flag_value("eval", argc, argv, &i, NULL, "--predictions", &preds)) != 0) {
			if (r < 0)
				return CLI_USAGE;
		} else if (strcmp(argv[i], "--json") == 0) {
			json = true;
		} else {
			return cli_usage("eval", "unexpected argument '%s'", argv[i]);
		}
	}
	if (!model || !images || !labels)
		return cli_usage("eval", "-m MODEL, --images IDX and --labels IDX are required");

	idx_file im, lb;
	int status = CLI_FAIL;
	tern_ctx *ctx = NULL;
	tern_registry *reg = NULL;
	tern_model *m = NULL;
	tern_image *img = NULL;
	FILE *pf = NULL;
	memset(&lb, 0, sizeof lb);
	if (idx_read(images, 3, &im) || idx_read(labels, 1, &lb))
		goto out;
	if (im.n != lb.n) {
		cli_error("%s has %u images but %s has %u labels", images, im.n, labels, lb.n);
		goto out;
	}
	uint32_t n = limit && (unsigned long)limit < im.n ? (uint32_t)limit : im.n;
	if (n == 0) {
		cli_error("%s: no images", images);
		goto out;
	}
	tern_ctx_params p = tern_ctx_default_params();
	p.n_threads = (int)threads;
	int rc = tern_ctx_new(&p, &ctx);
	if (!rc)
		rc = tern_registry_new(ctx, NULL, &reg);
	if (!rc)
		rc = tern_model_load(ctx, reg, model, &m);
	if (!rc)
		rc = tern_image_new(ctx, (int)im.cols, (int)im.rows, &img);
	if (rc) {
		cli_error("%s: %s", model, ctx && *tern_ctx_errmsg(ctx) ? tern_ctx_errmsg(ctx) : tern_status_str(rc));
		goto out;
	}
	if (preds && !(pf = fopen(preds, "w"))) {
		cli_error("%s: %s", preds, strerror(errno));
		goto out;
	}
	const size_t hw = (size_t)im.rows * im.cols;
	uint32_t correct = 0;
	double t0 = now_s();
	for (uint32_t i = 0; i < n; i++) {
		const unsigned char *src = im.items + (size_t)i * hw;
		for (size_t j = 0; j < hw; j++)
			img->data[3 * j] = img->data[3 * j + 1] = img->data[3 * j + 2] = src[j];
		tern_class top;
		int got = 0;
		if ((rc = tern_classify(ctx, m, img, 1, &top, &got))) {
			cli_error("%s: image %u: %s", images, i, tern_ctx_errmsg(ctx));
			goto out;
		}
		correct += got == 1 && top.index == (int)lb.items[i];
		if (pf)
			fprintf(pf, "%d %.6g\n", got == 1 ? top.index : -1, got == 1 ? (double)top.prob : 0.0);
	}
	double secs = now_s() - t0;
	if (pf) {
		int bad = ferror(pf);
		bad |= fclose(pf) != 0;
		pf = NULL;
		if (bad) {
			cli_error("%s: write error", preds);
			goto out;
		}
	}
	double acc = (double)correct / n, ips = secs > 0 ? n / secs : 0.0;
	if (json) {
		printf("{\"task\": \"classify\", \"model\": ");
		json_string(model);
		printf(", \"images\": %u, \"correct\": %u, \"accuracy\": %.6f, \"seconds\": %.6f, "
		       "\"images_per_s\": %.3f, \"threads\": %d}\n",
		       n, correct, acc, secs, ips, tern_ctx_threads(ctx));
	} else {
		printf("accuracy: %.4f (%u/%u)\n", acc, correct, n);
		printf("images/s: %.1f (%d thread%s, %.3f s)\n", ips, tern_ctx_threads(ctx),
		       tern_ctx_threads(ctx) == 1 ? "" : "s", secs);
	}
	status = CLI_OK;
out:
	if (pf)
		fclose(pf);
	tern_image_free(img);
	tern_model_free(m);
	tern_registry_free(reg);
	tern_ctx_free(ctx);
	free(im.data);
	free(lb.data);
	return status;
}

int cmd_eval(int argc, char **argv)
{
	if (argc < 2 || cli_is_help(argv[1])) {
		fputs(cmd_eval_help, argc < 2 ? stderr : stdout);
		return argc < 2 ? CLI_USAGE : CLI_OK;
	}
	if (strcmp(argv[1], "classify") == 0)
		return eval_classify(argc - 1, argv + 1);
	return cli_usage("eval", "unknown task '%s' (known: classify)", argv[1]);
}
