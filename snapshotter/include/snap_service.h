/* containerd.services.snapshots.v1.Snapshots over a snapshot store, registered on a gRPC server. */
#ifndef SNAP_SERVICE_H
#define SNAP_SERVICE_H

#include "sl/error.h"
#include "snap_grpc.h"
#include "snap_store.h"

/* List replies carry this many infos per message, as containerd's own service does. */
#define SNAP_LIST_BATCH 100

struct snap_remote;
struct snap_service;

/* The service over store and remote (NULL: no remote snapshots); both must
 * outlive it. Free it after the server it is registered on. */
int snap_service_new(struct snap_service **out, struct snap_store *store, struct snap_remote *remote, sl_error_t *err);
void snap_service_free(struct snap_service *sv);
/* Registers the ten Snapshots methods on srv (before it starts). */
int snap_service_register(struct snap_grpc_server *srv, struct snap_service *sv, sl_error_t *err);

/* The gRPC status for a store error class (NOT_FOUND, ALREADY_EXISTS,
 * FAILED_PRECONDITION, INVALID_ARGUMENT, ...). */
int snap_service_code(int sl_code);

#endif
