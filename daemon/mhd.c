/* mhd.c — see mhd.h. */
#include "daemon/mhd.h"

#include <errno.h>
#include <pthread.h>

#include "store/util.h"

#define MHD_SONAME "libmicrohttpd.so.12"

struct mhd_fns mhd;
static int load_r;
static pthread_once_t load_once = PTHREAD_ONCE_INIT;

static void load(void)
{
        struct mhd_fns fns = { 0 };
#define SYM(f) { "MHD_" #f, &fns.f }
        const struct dl_sym syms[] = {
                SYM(start_daemon),     SYM(stop_daemon),    SYM(create_response_from_buffer),
                SYM(destroy_response), SYM(queue_response), SYM(add_response_header),
                SYM(get_connection_info),
        };
#undef SYM
        char err[512];

        load_r = dl_load(MHD_SONAME, "libmicrohttpd12", syms, ELEMENTSOF(syms), err, sizeof err);
        if (load_r < 0)
                log_error_errno(load_r, "%s", err);
        else
                mhd = fns;
}

int mhd_load(void)
{
        int r = pthread_once(&load_once, load);
        return r ? -r : load_r;
}
