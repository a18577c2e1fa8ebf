/* mhd.c — see mhd.h. */
#include "daemon/mhd.h"

#include <errno.h>
#include <pthread.h>

#include "store/util.h"

#define MHD_SONAME "libmicrohttpd.so.12"

struct mhd_fns mhd;
static struct dl_lib mhd_lib = DL_LIB(MHD_SONAME, "libmicrohttpd12");
#define SYM(f) { "MHD_" #f, &mhd.f }
static const struct dl_sym mhd_syms[] = {
        SYM(start_daemon),     SYM(stop_daemon),    SYM(create_response_from_buffer),
        SYM(destroy_response), SYM(queue_response), SYM(add_response_header),
        SYM(get_connection_info),
};
#undef SYM

int mhd_load(void)
{
        int r = dl_lib_load(&mhd_lib, mhd_syms, ELEMENTSOF(mhd_syms));

        if (r < 0)
                log_error_errno(r, "%s", mhd_lib.err);
        return r;
}
