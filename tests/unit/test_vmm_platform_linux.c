/* Unit tests for the Linux platform's pure parts: virtio_mmio.device= words for kernels without ACPI device discovery. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "platform_linux.h"

static void test_virtio_cmdline_words(void **state)
{
	(void)state;
	char buf[512];
	assert_int_equal(vmm_linux_virtio_cmdline(0, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "");
	int n = vmm_linux_virtio_cmdline(3, buf, sizeof(buf));
	assert_string_equal(buf, "virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6 "
				 "virtio_mmio.device=4K@0xd0002000:7");
	assert_int_equal(n, (int)strlen(buf));
}

static void test_virtio_cmdline_too_small(void **state)
{
	(void)state;
	char buf[40];
	/* One word is 34 bytes: it fits, two do not. */
	assert_int_equal(vmm_linux_virtio_cmdline(1, buf, sizeof(buf)), 34);
	assert_int_equal(vmm_linux_virtio_cmdline(2, buf, sizeof(buf)), -1);
	assert_int_equal(vmm_linux_virtio_cmdline(1, buf, 34), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_virtio_cmdline_words),
		cmocka_unit_test(test_virtio_cmdline_too_small),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
