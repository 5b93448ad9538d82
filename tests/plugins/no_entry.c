/* no_entry.c: a shared object without the entry symbol. */
int tern_test_not_a_plugin(void);
__attribute__((visibility("default"))) int tern_test_not_a_plugin(void) { return 1; }
