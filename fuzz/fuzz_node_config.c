/* libFuzzer target: sporelet-node's containerd config.toml editor (TOML scanner, install/uninstall edits, with and without --cri-snapshotter) and its install record parser. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sporelet_node.h"

/* For every input the editor accepts: a second install changes nothing, and
 * uninstall of the result succeeds and (for input holding no edit of ours)
 * gives back the input byte for byte. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	struct node_ctrd_opts o;
	sl_error_t err = NULL;
	char *out = NULL, *again = NULL, *back = NULL;
	size_t outlen, againlen, backlen;
	bool changed, remove;

	node_ctrd_opts_default(&o);
	/* The last byte's low bit picks --cri-snapshotter, so both shapes of
	 * the [..cri.containerd] edit are explored on the same inputs. */
	if (size > 0 && (data[size - 1] & 1))
		o.cri_snapshotter = "spore";
	if (size > 0 && data[0] == '{') {
		struct node_record rec;

		if (node_record_parse(in, size, &rec, &err) == 0)
			node_record_free(&rec);
		else if (!err || strlen(sl_error_msg(err)) > 1024)
			__builtin_trap();
		sl_error_free(&err);
	}
	if (node_config_install(in, size, true, &o, &out, &outlen, &changed, &err) < 0) {
		if (!err || out || strlen(sl_error_msg(err)) > 1024)
			__builtin_trap();
		sl_error_free(&err);
		return 0;
	}
	if (node_config_install(out, outlen, true, &o, &again, &againlen, &changed, &err) < 0 || changed ||
	    againlen != outlen || memcmp(again, out, outlen) != 0)
		__builtin_trap();
	if (node_config_uninstall(out, outlen, &back, &backlen, &remove, &changed, &err) < 0 || !changed)
		__builtin_trap();
	/* (a file we created comes back as "remove it") */
	if (!memmem(in, size, "sporelet-node", 13) && (remove || backlen != size || memcmp(back, in, size) != 0))
		__builtin_trap();
	free(out);
	free(again);
	free(back);
	return 0;
}
