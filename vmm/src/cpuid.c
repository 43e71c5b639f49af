/* Normalised CPUID (the guest-visible platform contract) and its host check. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vmm_internal.h"

#define CPUID_MAX_ENT 256

enum { R_EAX, R_EBX, R_ECX, R_EDX };

/* Named feature bits: used for readable contract errors and the manifest's
 * feature list. Unnamed bits are still checked, and reported by position. */
static const struct feature {
	uint32_t leaf, sub;
	uint8_t reg, bit;
	const char *name;
} features[] = {
	{1, 0, R_EDX, 0, "fpu"}, {1, 0, R_EDX, 4, "tsc"}, {1, 0, R_EDX, 5, "msr"},
	{1, 0, R_EDX, 6, "pae"}, {1, 0, R_EDX, 8, "cx8"}, {1, 0, R_EDX, 9, "apic"},
	{1, 0, R_EDX, 15, "cmov"}, {1, 0, R_EDX, 19, "clflush"}, {1, 0, R_EDX, 23, "mmx"},
	{1, 0, R_EDX, 24, "fxsr"}, {1, 0, R_EDX, 25, "sse"}, {1, 0, R_EDX, 26, "sse2"},
	{1, 0, R_ECX, 0, "sse3"}, {1, 0, R_ECX, 1, "pclmulqdq"}, {1, 0, R_ECX, 9, "ssse3"},
	{1, 0, R_ECX, 12, "fma"}, {1, 0, R_ECX, 13, "cx16"}, {1, 0, R_ECX, 19, "sse4_1"},
	{1, 0, R_ECX, 20, "sse4_2"}, {1, 0, R_ECX, 21, "x2apic"}, {1, 0, R_ECX, 22, "movbe"},
	{1, 0, R_ECX, 23, "popcnt"}, {1, 0, R_ECX, 24, "tsc_deadline"}, {1, 0, R_ECX, 25, "aes"},
	{1, 0, R_ECX, 26, "xsave"}, {1, 0, R_ECX, 28, "avx"}, {1, 0, R_ECX, 29, "f16c"},
	{1, 0, R_ECX, 30, "rdrand"},
	{7, 0, R_EBX, 0, "fsgsbase"}, {7, 0, R_EBX, 3, "bmi1"}, {7, 0, R_EBX, 5, "avx2"},
	{7, 0, R_EBX, 7, "smep"}, {7, 0, R_EBX, 8, "bmi2"}, {7, 0, R_EBX, 9, "erms"},
	{7, 0, R_EBX, 10, "invpcid"}, {7, 0, R_EBX, 18, "rdseed"}, {7, 0, R_EBX, 19, "adx"},
	{7, 0, R_EBX, 20, "smap"}, {7, 0, R_EBX, 23, "clflushopt"}, {7, 0, R_EBX, 24, "clwb"},
	{7, 0, R_EBX, 29, "sha_ni"}, {7, 0, R_ECX, 2, "umip"}, {7, 0, R_ECX, 9, "vaes"},
	{7, 0, R_ECX, 10, "vpclmulqdq"}, {7, 0, R_ECX, 22, "rdpid"}, {7, 0, R_EDX, 4, "fsrm"},
	{0xd, 1, R_EAX, 0, "xsaveopt"}, {0xd, 1, R_EAX, 1, "xsavec"}, {0xd, 1, R_EAX, 2, "xgetbv1"},
	{0x80000001, 0, R_ECX, 0, "lahf_lm"}, {0x80000001, 0, R_ECX, 5, "abm"},
	{0x80000001, 0, R_ECX, 6, "sse4a"}, {0x80000001, 0, R_ECX, 8, "3dnowprefetch"},
	{0x80000001, 0, R_EDX, 11, "syscall"}, {0x80000001, 0, R_EDX, 20, "nx"},
	{0x80000001, 0, R_EDX, 26, "pdpe1gb"}, {0x80000001, 0, R_EDX, 27, "rdtscp"},
	{0x80000001, 0, R_EDX, 29, "lm"},
};

/* Feature registers whose bits the host must offer for a spore to restore. */
static const struct {
	uint32_t leaf, sub;
	uint8_t reg;
} contract_regs[] = {
	{1, 0, R_ECX}, {1, 0, R_EDX}, {7, 0, R_EBX}, {7, 0, R_ECX}, {7, 0, R_EDX},
	{7, 1, R_EAX}, {0xd, 0, R_EAX}, {0xd, 1, R_EAX}, {0x80000001, 0, R_ECX},
	{0x80000001, 0, R_EDX}, {0x40000001, 0, R_EAX},
};

/* Bits withheld from every guest: virtualisation extensions, features whose
 * state we do not save (AVX-512, AMX, PKU, MPX, PT, SGX, XSAVES), and
 * transactional memory, so spores are portable across hosts of a class. */
static const struct {
	uint32_t leaf, sub;
	uint8_t reg;
	uint32_t clear;
} masks[] = {
	{1, 0, R_ECX, (1u << 3) | (1u << 4) | (1u << 5) | (1u << 6) | (1u << 7) | (1u << 8) |
			      (1u << 10) | (1u << 15) | (1u << 18)},
	{7, 0, R_EBX, (1u << 2) | (1u << 4) | (1u << 11) | (1u << 14) | (1u << 16) | (1u << 17) |
			      (1u << 21) | (1u << 25) | (1u << 26) | (1u << 27) | (1u << 28) |
			      (1u << 30) | (1u << 31)},
	{7, 0, R_ECX, (1u << 1) | (1u << 3) | (1u << 4) | (1u << 5) | (1u << 6) | (1u << 11) |
			      (1u << 12) | (1u << 14) | (1u << 16) | (1u << 30)},
	{7, 0, R_EDX, (1u << 2) | (1u << 3) | (1u << 8) | (1u << 14) | (1u << 16) | (1u << 22) |
			      (1u << 23) | (1u << 24) | (1u << 25)},
	{7, 1, R_EAX, 0xffffffffu},
	{0xd, 1, R_EAX, ~0x7u},
	{0x80000001, 0, R_ECX, (1u << 2) | (1u << 10)},
};

#define XCR0_ALLOWED 0x7ull /* x87 | SSE | AVX */

static uint32_t *reg_of(struct kvm_cpuid_entry2 *e, int reg)
{
	switch (reg) {
	case R_EAX: return &e->eax;
	case R_EBX: return &e->ebx;
	case R_ECX: return &e->ecx;
	default: return &e->edx;
	}
}

static struct kvm_cpuid_entry2 *find(struct kvm_cpuid2 *c, uint32_t leaf, uint32_t sub)
{
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		if (e->function != leaf)
			continue;
		if ((e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) && e->index != sub)
			continue;
		return e;
	}
	return NULL;
}

static struct kvm_cpuid2 *cpuid_alloc(void)
{
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + CPUID_MAX_ENT * sizeof(struct kvm_cpuid_entry2));
	if (c)
		c->nent = CPUID_MAX_ENT;
	return c;
}

static int host_supported(int kvm_fd, struct kvm_cpuid2 **out, sl_error_t *err)
{
	struct kvm_cpuid2 *c = cpuid_alloc();
	if (!c)
		return sl_error_set(err, SL_E_NOMEM, "cpuid table");
	if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) < 0) {
		free(c);
		return sl_error_sys(err, "KVM_GET_SUPPORTED_CPUID");
	}
	*out = c;
	return 0;
}

int vmm_cpuid_normalise(struct vmm_vm *vm, sl_error_t *err)
{
	struct kvm_cpuid2 *c = NULL;
	if (host_supported(vm->kvm_fd, &c, err) < 0)
		return -1;
	for (size_t i = 0; i < sizeof(masks) / sizeof(masks[0]); i++) {
		struct kvm_cpuid_entry2 *e = find(c, masks[i].leaf, masks[i].sub);
		if (e)
			*reg_of(e, masks[i].reg) &= ~masks[i].clear;
	}
	/* Drop leaves describing hardware we hide (SVM/VMX details, and XSAVE
	 * components outside XCR0_ALLOWED). */
	uint32_t w = 0;
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		if (e->function == 0x8000000a)
			continue;
		if (e->function == 0xd && e->index >= 2 && !((XCR0_ALLOWED >> e->index) & 1))
			continue;
		c->entries[w++] = *e;
	}
	c->nent = w;
	struct kvm_cpuid_entry2 *e = find(c, 1, 0);
	if (e)
		e->ecx |= 1u << 31; /* hypervisor present */
	e = find(c, 0xd, 0);
	if (e) {
		e->eax &= (uint32_t)XCR0_ALLOWED;
		e->edx = 0;
		/* Max XSAVE size for the allowed components: legacy 512 + header
		 * 64 + AVX 256. */
		e->ecx = (e->eax & 4) ? 832 : 576;
	}
	/* Timing leaf 0x40000010: TSC and APIC bus frequency in kHz, so guests
	 * need not calibrate (KVM's APIC timer runs at 1 GHz). */
	e = find(c, 0x40000000, 0);
	if (e && c->nent < CPUID_MAX_ENT) {
		if (e->eax < 0x40000010)
			e->eax = 0x40000010;
		struct kvm_cpuid_entry2 t = {.function = 0x40000010, .eax = vm->tsc_khz, .ebx = 1000000};
		struct kvm_cpuid_entry2 *old = find(c, 0x40000010, 0);
		if (old)
			*old = t;
		else
			c->entries[c->nent++] = t;
	}
	free(vm->cpuid);
	vm->cpuid = c;
	return 0;
}

int vmm_cpuid_set_vcpu(struct vmm_vm *vm, struct vmm_vcpu *v, sl_error_t *err)
{
	size_t sz = sizeof(struct kvm_cpuid2) + vm->cpuid->nent * sizeof(struct kvm_cpuid_entry2);
	_cleanup_free_ struct kvm_cpuid2 *c = malloc(sz);
	if (!c)
		return sl_error_set(err, SL_E_NOMEM, "cpuid table");
	memcpy(c, vm->cpuid, sz);
	uint32_t id = v->index;
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		switch (e->function) {
		case 1:
			e->ebx = (e->ebx & 0x0000ffffu) | (id << 24) |
				 ((uint32_t)vm->machine.vcpus << 16);
			break;
		case 0xb:
		case 0x1f:
			e->edx = id;
			break;
		case 0x8000001e:
			e->eax = id;
			break;
		}
	}
	if (ioctl(v->fd, KVM_SET_CPUID2, c) < 0)
		return sl_error_sys(err, "KVM_SET_CPUID2 (vcpu %u)", v->index);
	return 0;
}

const char *vmm_cpuid_vendor(const struct kvm_cpuid2 *c, char out[13])
{
	memset(out, 0, 13);
	for (uint32_t i = 0; i < c->nent; i++) {
		if (c->entries[i].function == 0) {
			memcpy(out, &c->entries[i].ebx, 4);
			memcpy(out + 4, &c->entries[i].edx, 4);
			memcpy(out + 8, &c->entries[i].ecx, 4);
			break;
		}
	}
	return out;
}

void vmm_cpuid_feature_names(const struct kvm_cpuid2 *c, void (*cb)(const char *, void *), void *arg)
{
	for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++) {
		struct kvm_cpuid_entry2 *e = find((struct kvm_cpuid2 *)c, features[i].leaf, features[i].sub);
		if (e && ((*reg_of(e, features[i].reg) >> features[i].bit) & 1))
			cb(features[i].name, arg);
	}
}

static const char *feature_name(uint32_t leaf, uint32_t sub, int reg, int bit)
{
	for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++)
		if (features[i].leaf == leaf && features[i].sub == sub && features[i].reg == reg &&
		    features[i].bit == bit)
			return features[i].name;
	return NULL;
}

int vmm_cpuid_check_host(int kvm_fd, const struct kvm_cpuid2 *want, sl_error_t *err)
{
	_cleanup_free_ struct kvm_cpuid2 *host = NULL;
	if (host_supported(kvm_fd, &host, err) < 0)
		return -1;
	char wv[13], hv[13];
	vmm_cpuid_vendor(want, wv);
	vmm_cpuid_vendor(host, hv);
	if (strcmp(wv, hv) != 0)
		return sl_error_set(err, SL_E_UNSUPPORTED,
				    "platform contract not met: spore needs a %s CPU, host is %s", wv, hv);
	static const char *regn[] = {"eax", "ebx", "ecx", "edx"};
	for (size_t i = 0; i < sizeof(contract_regs) / sizeof(contract_regs[0]); i++) {
		struct kvm_cpuid_entry2 *w = find((struct kvm_cpuid2 *)want, contract_regs[i].leaf,
						  contract_regs[i].sub);
		if (!w)
			continue;
		struct kvm_cpuid_entry2 *h = find(host, contract_regs[i].leaf, contract_regs[i].sub);
		uint32_t wb = *reg_of(w, contract_regs[i].reg);
		uint32_t hb = h ? *reg_of(h, contract_regs[i].reg) : 0;
		/* The hypervisor bit is ours to set; the host need not report it. */
		if (contract_regs[i].leaf == 1 && contract_regs[i].reg == R_ECX)
			hb |= 1u << 31;
		uint32_t missing = wb & ~hb;
		if (missing) {
			int bit = __builtin_ctz(missing);
			const char *n = feature_name(contract_regs[i].leaf, contract_regs[i].sub,
						     contract_regs[i].reg, bit);
			return sl_error_set(err, SL_E_UNSUPPORTED,
					    "platform contract not met: host CPU lacks %s (cpuid 0x%x.%u %s bit %d)",
					    n ? n : "a required feature", contract_regs[i].leaf,
					    contract_regs[i].sub, regn[contract_regs[i].reg], bit);
		}
	}
	return 0;
}
