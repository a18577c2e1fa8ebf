/* mhd.h — libmicrohttpd, loaded at run time: the table of the functions the
 * control API calls, filled by mhd_load(). Linking libmicrohttpd made every
 * exec of stasisd load GnuTLS and its chain and run its constructors
 * (~1.2 ms of each `stasis mount`); stasisd loads it on a thread of its own
 * while it mounts (docs/dependencies.md). Include this instead of
 * <microhttpd.h>'s functions: its types and constants are used as they are. */
#ifndef STASIS_MHD_H
#define STASIS_MHD_H

#include <microhttpd.h>

struct mhd_fns {
        typeof(MHD_start_daemon) *start_daemon;
        typeof(MHD_stop_daemon) *stop_daemon;
        typeof(MHD_create_response_from_buffer) *create_response_from_buffer;
        typeof(MHD_destroy_response) *destroy_response;
        typeof(MHD_queue_response) *queue_response;
        typeof(MHD_add_response_header) *add_response_header;
        typeof(MHD_get_connection_info) *get_connection_info;
};

/* Filled by mhd_load(); read-only after that. */
extern struct mhd_fns mhd;

/* mhd_load(): dlopen libmicrohttpd and fill mhd. Once per process; 0, or
 * -ELIBACC (not installed) / -ELIBBAD (not the library we need), logged. */
int mhd_load(void);

#endif
