/* The test guest's agent: a polled virtio-vsock driver and the agent protocol's built-in commands. */
#ifndef TG_AGENT_H
#define TG_AGENT_H

#include <stdint.h>

/* Guest RAM the agent needs (rings, packet buffers, per-connection
 * buffers), 2 MiB aligned; main.c places it after the work regions. */
#define TG_AGENT_ARENA (6ull << 20)

/* Sets up the virtio-mmio vsock device at mmio (IOAPIC pin gsi) and starts
 * listening on port 1024. Ring 3, CPU 0. Returns NULL, or what failed. */
const char *tg_agent_init(uint64_t mmio, uint32_t gsi, uint64_t arena);
/* One round of work: device rings, connections, processes, timers.
 * Returns nonzero if it made progress (so another round may make more). */
int tg_agent_poll(void);

/* Provided by main.c. */
uint64_t tg_now_ms(void);
void tg_gen_id(uint8_t id[16]); /* the current generation id (zeros: none) */
void tg_log(const char *a, const char *b, uint64_t n); /* "tg: agent <a><b> <n>" */
__attribute__((noreturn)) void tg_poweroff(void);  /* SHUTDOWN: exit status 0 */
uint64_t tg_virq_count(void);                       /* device interrupts CPU 0 took */
/* Canonical decimal of 1..10 digits up to max (no sign or spaces). */
int tg_parse_dec(const char *s, uint32_t n, uint64_t max, uint64_t *out);

#endif
