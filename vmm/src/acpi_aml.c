/* AML byte-code emitter (ACPI 6.3 section 20): the few opcodes the DSDT of acpi.c needs. */
#include <string.h>

#include "acpi.h"

/* Opcodes used below (ACPI 6.3, 20.2). */
enum {
	AML_ZERO = 0x00,
	AML_ONE = 0x01,
	AML_NAME = 0x08,
	AML_BYTE = 0x0a,
	AML_WORD = 0x0b,
	AML_DWORD = 0x0c,
	AML_STRING = 0x0d,
	AML_QWORD = 0x0e,
	AML_SCOPE = 0x10,
	AML_BUFFER = 0x11,
	AML_PACKAGE = 0x12,
	AML_METHOD = 0x14,
	AML_DUAL_NAME = 0x2e,
	AML_MULTI_NAME = 0x2f,
	AML_EXT = 0x5b,
	AML_EXT_DEVICE = 0x82,
	AML_ROOT = 0x5c,
	AML_PARENT = 0x5e,
	AML_ARG0 = 0x68,
	AML_NOTIFY = 0x86,
	AML_LEQUAL = 0x93,
	AML_IF = 0xa0,
	AML_RETURN = 0xa4,
};

void acpi_aml_init(struct acpi_aml *a, uint8_t *buf, size_t cap)
{
	memset(a, 0, sizeof(*a));
	a->buf = buf;
	a->cap = buf ? cap : 0;
}

static void misuse(struct acpi_aml *a, const char *why)
{
	if (!a->bad)
		a->bad = why;
}

const char *acpi_aml_error(const struct acpi_aml *a)
{
	if (a->bad)
		return a->bad;
	if (a->depth)
		return "unclosed AML package";
	return NULL;
}

void acpi_aml_byte(struct acpi_aml *a, uint8_t b)
{
	if (!a->overflow && a->len < a->cap)
		a->buf[a->len] = b;
	else
		a->overflow = true;
	a->len++;
}

void acpi_aml_bytes(struct acpi_aml *a, const void *p, size_t n)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < n; i++)
		acpi_aml_byte(a, b[i]);
}

static bool name_char(char c, bool first)
{
	return (c >= 'A' && c <= 'Z') || c == '_' || (!first && c >= '0' && c <= '9');
}

void acpi_aml_namestring(struct acpi_aml *a, const char *path)
{
	char segs[16][4];
	unsigned n = 0;
	const char *p = path;

	if (*p == '\\') {
		acpi_aml_byte(a, AML_ROOT);
		p++;
	} else {
		while (*p == '^') {
			acpi_aml_byte(a, AML_PARENT);
			p++;
		}
	}
	/* Split on '.', padding short segments with '_' as ASL does. */
	while (*p) {
		unsigned k = 0;
		if (n == 16)
			return misuse(a, "AML name has too many segments");
		while (*p && *p != '.') {
			if (k == 4 || !name_char(*p, k == 0))
				return misuse(a, "bad AML name segment");
			segs[n][k++] = *p++;
		}
		if (k == 0)
			return misuse(a, "empty AML name segment");
		while (k < 4)
			segs[n][k++] = '_';
		n++;
		if (*p == '.' && !*++p)
			return misuse(a, "AML name ends with '.'");
	}
	if (n == 0) {
		/* "\" alone is the root; anything else needs a segment. */
		if (path[0] == '\\' && path[1] == '\0') {
			acpi_aml_byte(a, AML_ZERO); /* NullName */
			return;
		}
		return misuse(a, "empty AML name");
	}
	if (n == 2) {
		acpi_aml_byte(a, AML_DUAL_NAME);
	} else if (n > 2) {
		acpi_aml_byte(a, AML_MULTI_NAME);
		acpi_aml_byte(a, (uint8_t)n);
	}
	acpi_aml_bytes(a, segs, (size_t)n * 4);
}

void acpi_aml_integer(struct acpi_aml *a, uint64_t v)
{
	unsigned width;
	if (v == 0) {
		acpi_aml_byte(a, AML_ZERO);
		return;
	}
	if (v == 1) {
		acpi_aml_byte(a, AML_ONE);
		return;
	}
	/* OnesOp is avoided on purpose: its value depends on the DSDT
	 * revision (32- or 64-bit integers). */
	if (v <= 0xff) {
		acpi_aml_byte(a, AML_BYTE);
		width = 1;
	} else if (v <= 0xffff) {
		acpi_aml_byte(a, AML_WORD);
		width = 2;
	} else if (v <= 0xffffffffull) {
		acpi_aml_byte(a, AML_DWORD);
		width = 4;
	} else {
		acpi_aml_byte(a, AML_QWORD);
		width = 8;
	}
	for (unsigned i = 0; i < width; i++)
		acpi_aml_byte(a, (uint8_t)(v >> (8 * i)));
}

void acpi_aml_dword(struct acpi_aml *a, uint32_t v)
{
	acpi_aml_byte(a, AML_DWORD);
	for (unsigned i = 0; i < 4; i++)
		acpi_aml_byte(a, (uint8_t)(v >> (8 * i)));
}

void acpi_aml_string(struct acpi_aml *a, const char *s)
{
	acpi_aml_byte(a, AML_STRING);
	for (; *s; s++) {
		/* AsciiCharList is 0x01-0x7f. */
		if ((unsigned char)*s > 0x7f)
			return misuse(a, "non-ASCII AML string");
		acpi_aml_byte(a, (uint8_t)*s);
	}
	acpi_aml_byte(a, 0);
}

void acpi_aml_pkg_begin(struct acpi_aml *a)
{
	if (a->depth == ACPI_AML_DEPTH)
		return misuse(a, "AML nesting too deep");
	a->open[a->depth++] = a->len;
}

void acpi_aml_pkg_end(struct acpi_aml *a)
{
	size_t start, body, total;
	unsigned k;
	uint8_t enc[4];

	if (a->depth == 0)
		return misuse(a, "AML package closed twice");
	start = a->open[--a->depth];
	body = a->len - start;
	/* PkgLength counts its own bytes: 1 byte up to 63, then 2, 3 or 4
	 * bytes with 4 + 8 * (k - 1) bits (20.2.4). */
	if (body + 1 <= 0x3f)
		k = 1;
	else if (body + 2 <= 0xfff)
		k = 2;
	else if (body + 3 <= 0xfffff)
		k = 3;
	else if (body + 4 <= 0xfffffff)
		k = 4;
	else
		return misuse(a, "AML package too long");
	total = body + k;
	if (k == 1) {
		enc[0] = (uint8_t)total;
	} else {
		enc[0] = (uint8_t)(((k - 1) << 6) | (total & 0xf));
		for (unsigned i = 1; i < k; i++)
			enc[i] = (uint8_t)(total >> (4 + 8 * (i - 1)));
	}
	if (!a->overflow && a->len + k <= a->cap) {
		memmove(a->buf + start + k, a->buf + start, body);
		memcpy(a->buf + start, enc, k);
	} else {
		a->overflow = true;
	}
	a->len += k;
}

void acpi_aml_name(struct acpi_aml *a, const char *path)
{
	acpi_aml_byte(a, AML_NAME);
	acpi_aml_namestring(a, path);
}

void acpi_aml_scope_begin(struct acpi_aml *a, const char *path)
{
	acpi_aml_byte(a, AML_SCOPE);
	acpi_aml_pkg_begin(a);
	acpi_aml_namestring(a, path);
}

void acpi_aml_device_begin(struct acpi_aml *a, const char *path)
{
	acpi_aml_byte(a, AML_EXT);
	acpi_aml_byte(a, AML_EXT_DEVICE);
	acpi_aml_pkg_begin(a);
	acpi_aml_namestring(a, path);
}

void acpi_aml_method_begin(struct acpi_aml *a, const char *path, unsigned nargs, bool serialized)
{
	if (nargs > 7)
		return misuse(a, "AML method with more than 7 arguments");
	acpi_aml_byte(a, AML_METHOD);
	acpi_aml_pkg_begin(a);
	acpi_aml_namestring(a, path);
	/* MethodFlags: ArgCount in bits 0-2, SerializeFlag bit 3, SyncLevel 0. */
	acpi_aml_byte(a, (uint8_t)(nargs | (serialized ? 0x08 : 0)));
}

void acpi_aml_package_begin(struct acpi_aml *a, unsigned nelems)
{
	if (nelems > 0xff)
		return misuse(a, "AML package with more than 255 elements");
	acpi_aml_byte(a, AML_PACKAGE);
	acpi_aml_pkg_begin(a);
	acpi_aml_byte(a, (uint8_t)nelems);
}

void acpi_aml_if_begin(struct acpi_aml *a)
{
	acpi_aml_byte(a, AML_IF);
	acpi_aml_pkg_begin(a);
}

void acpi_aml_end(struct acpi_aml *a)
{
	acpi_aml_pkg_end(a);
}

void acpi_aml_buffer(struct acpi_aml *a, const uint8_t *p, size_t n)
{
	acpi_aml_byte(a, AML_BUFFER);
	acpi_aml_pkg_begin(a);
	acpi_aml_integer(a, n);
	acpi_aml_bytes(a, p, n);
	acpi_aml_pkg_end(a);
}

void acpi_aml_return(struct acpi_aml *a)
{
	acpi_aml_byte(a, AML_RETURN);
}

void acpi_aml_lequal(struct acpi_aml *a)
{
	acpi_aml_byte(a, AML_LEQUAL);
}

void acpi_aml_arg(struct acpi_aml *a, unsigned n)
{
	if (n > 6)
		return misuse(a, "AML Arg index above 6");
	acpi_aml_byte(a, (uint8_t)(AML_ARG0 + n));
}

void acpi_aml_notify(struct acpi_aml *a, const char *path, uint64_t value)
{
	acpi_aml_byte(a, AML_NOTIFY);
	acpi_aml_namestring(a, path);
	acpi_aml_integer(a, value);
}
