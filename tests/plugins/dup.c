/* dup.c: a valid plugin whose name repeats good.c's; the second is refused. */
#define PLUGIN_NAME "test-good"
#include "good.c"
