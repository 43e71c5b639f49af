/* Unit tests of the shim's readers: its YAML configuration and the OCI spec fields it uses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "shim_config.h"
#include "shim_spec.h"

static void config_refused(const char *yaml, const char *needle)
{
	struct shim_config c;
	shim_config_defaults(&c);
	sl_error_t err = NULL;
	assert_int_equal(shim_config_parse(yaml, strlen(yaml), "shim.yaml", &c, &err), -1);
	assert_non_null(err);
	if (!strstr(sl_error_msg(err), needle))
		fail_msg("error \"%s\" lacks \"%s\"", sl_error_msg(err), needle);
	sl_error_free(&err);
}

static void test_config(void **state)
{
	(void)state;
	struct shim_config c;
	shim_config_defaults(&c);
	assert_string_equal(c.state_dir, "/run/sporelet/shim");
	assert_int_equal(c.ready_timeout_ms, 30000);
	assert_string_equal(c.disk_dir, "");
	sl_error_t err = NULL;
	const char *y = "spore: /opt/sporelet/spore\nstate_dir: /run/x\nready_timeout_ms: 5000\n"
			"pool:\n  size: 4\n  memory_mib: 512\n  vcpus: 2\ndisk_dir: /var/lib/sporelet/disks\n"
			"jail_uid: \"65534:65533\"\n";
	assert_int_equal(shim_config_parse(y, strlen(y), "shim.yaml", &c, &err), 0);
	assert_string_equal(c.spore_bin, "/opt/sporelet/spore");
	assert_string_equal(c.state_dir, "/run/x");
	assert_int_equal(c.ready_timeout_ms, 5000);
	assert_int_equal(c.pool_size, 4);
	assert_int_equal(c.memory_mib, 512);
	assert_int_equal(c.vcpus, 2);
	assert_string_equal(c.disk_dir, "/var/lib/sporelet/disks");
	assert_string_equal(c.jail_uid, "65534:65533");
	/* A failed parse leaves the configuration as it was. */
	config_refused("spore: /a\nstat_dir: /typo\n", "unknown setting stat_dir");
	config_refused("pool:\n  sise: 1\n", "unknown setting pool.sise");
	config_refused("spore: relative/path\n", "spore must be an absolute path");
	config_refused("disk_dir: disks\n", "disk_dir must be an absolute path");
	config_refused("jail_uid: \"0\"\n", "jail_uid must be a string \"UID[:GID]\"");
	config_refused("jail_uid: 65534\n", "jail_uid must be a string");
	config_refused("jail_uid: \"65534:\"\n", "jail_uid must be a string");
	config_refused("jail_uid: \"1:2:3\"\n", "jail_uid must be a string");
	config_refused("jail_uid: \"4294967295\"\n", "jail_uid must be a string");
	config_refused("jail_uid: \"-1\"\n", "jail_uid must be a string");
	config_refused("ready_timeout_ms: 5\n", "ready_timeout_ms must be an integer in 100..600000");
	config_refused("ready_timeout_ms: \"5000\"\n", "ready_timeout_ms must be an integer");
	config_refused("pool:\n  memory_mib: 257\n", "pool.memory_mib must be even");
	config_refused("pool:\n  vcpus: 17\n", "pool.vcpus must be an integer in 1..16");
	config_refused("- a\n- b\n", "want a mapping of settings");
	config_refused("state_dir: /a/very/long/state/directory/that/leaves/no/room/for/the/sockets/below/it/at/all\n",
		       "state_dir must be an absolute path shorter than 80 bytes");
	assert_string_equal(c.spore_bin, "/opt/sporelet/spore");
}

static void spec_refused(const char *json, const char *needle)
{
	struct shim_spec s;
	sl_error_t err = NULL;
	assert_int_equal(shim_spec_parse(json, strlen(json), "config.json", &s, &err), -1);
	assert_non_null(err);
	if (!strstr(sl_error_msg(err), needle))
		fail_msg("error \"%s\" lacks \"%s\"", sl_error_msg(err), needle);
	sl_error_free(&err);
}

static void test_spec(void **state)
{
	(void)state;
	const char *j = "{\"process\":{\"args\":[\"echo\",\"hi\"],\"env\":[\"A=1\",\"PATH=/bin\"],\"cwd\":\"/w\","
			"\"user\":{\"uid\":7,\"gid\":8},\"terminal\":true},\"hostname\":\"h1\","
			"\"linux\":{\"cgroupsPath\":\"/pods/p1/c1\"},"
			"\"annotations\":{\"io.kubernetes.cri.container-type\":\"sandbox\",\"sporelet.ai/spore\":\"/s\"}}";
	struct shim_spec s;
	sl_error_t err = NULL;
	assert_int_equal(shim_spec_parse(j, strlen(j), "config.json", &s, &err), 0);
	assert_string_equal(s.process.argv[0], "echo");
	assert_string_equal(s.process.argv[1], "hi");
	assert_null(s.process.argv[2]);
	assert_string_equal(s.process.env[1], "PATH=/bin");
	assert_string_equal(s.process.cwd, "/w");
	assert_int_equal(s.process.uid, 7);
	assert_int_equal(s.process.gid, 8);
	assert_true(s.process.terminal);
	assert_string_equal(s.hostname, "h1");
	assert_string_equal(s.cgroups_path, "/pods/p1/c1");
	assert_string_equal(shim_spec_annotation(&s, "sporelet.ai/spore"), "/s");
	assert_null(shim_spec_annotation(&s, "absent"));
	shim_spec_free(&s);

	spec_refused("{}", "process");
	spec_refused("{\"process\":{\"args\":[]}}", "process.args must have 1..4096 entries");
	spec_refused("{\"process\":{\"args\":[\"\"]}}", "process.args[0] is empty");
	spec_refused("{\"process\":{\"args\":[\"a\"],\"env\":[\"NOEQUALS\"]}}", "process.env[0] is not KEY=VALUE");
	spec_refused("{\"process\":{\"args\":[\"a\"],\"cwd\":\"rel\"}}", "process.cwd must be absolute");
	spec_refused("{\"process\":{\"args\":[\"a\"],\"terminal\":1}}", "process.terminal is not a boolean");
	spec_refused("{\"process\":{\"args\":[\"a\"],\"user\":{\"uid\":4294967296}}}", "uid out of range");
	spec_refused("{\"process\":{\"args\":[\"a\"]},\"annotations\":{\"k\":1}}", "annotation k is not a string");
	spec_refused("{\"process\":{\"args\":[\"a\"]},\"hostname\":"
		     "\"0123456789012345678901234567890123456789012345678901234567890123456789\"}",
		     "hostname longer than 64 bytes");
	spec_refused("{\"process\":{\"args\":[\"a\"]}} trailing", "config.json");

	struct shim_process_spec p;
	const char *pj = "{\"args\":[\"sleep\",\"1\"],\"cwd\":\"/\"}";
	assert_int_equal(shim_process_parse(pj, strlen(pj), "exec", &p, &err), 0);
	assert_non_null(p.env);
	assert_null(p.env[0]);
	shim_process_spec_free(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config),
		cmocka_unit_test(test_spec),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
