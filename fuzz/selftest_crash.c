/* A fuzzer that crashes on purpose (on inputs starting "CRASH"): the fixture of the fuzz-long-selftest ctest. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size >= 5 && !memcmp(data, "CRASH", 5))
		__builtin_trap();
	return 0;
}
