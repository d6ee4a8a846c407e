// A valid shared library that is not a Molt module: no entry points.
extern "C" __attribute__((visibility("default"))) int molt_test_not_a_module() { return 42; }
