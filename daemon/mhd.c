/* mhd.c — see mhd.h. */
#include "daemon/mhd.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "store/util.h"

#define MHD_SONAME "libmicrohttpd.so.12"

_Static_assert(sizeof(void *) == sizeof(void (*)(void)), "dlsym(): function pointers are void *");

struct mhd_fns mhd;
static int load_r;
static pthread_once_t load_once = PTHREAD_ONCE_INIT;

static void load(void)
{
        struct mhd_fns fns = { 0 };
#define SYM(f) { "MHD_" #f, &fns.f }
        const struct {
                const char *name;
                void *slot; /* where the function pointer goes */
        } syms[] = {
                SYM(start_daemon),     SYM(stop_daemon),  SYM(create_response_from_buffer),
                SYM(destroy_response), SYM(queue_response), SYM(add_response_header),
                SYM(get_connection_info),
        };
#undef SYM
        void *lib = dlopen(MHD_SONAME, RTLD_NOW | RTLD_LOCAL);
        const char *why;

        if (!lib) {
                why = dlerror();
                load_r = log_error_errno(ELIBACC, "cannot load %s (Debian package libmicrohttpd12): %s", MHD_SONAME,
                                         why ? why : "not found");
                return;
        }
        for (size_t i = 0; i < ELEMENTSOF(syms); i++) {
                void *p;

                (void)dlerror(); /* clear: dlerror() after dlsym() must be dlsym()'s */
                p = dlsym(lib, syms[i].name);
                if (!p) {
                        why = dlerror();
                        load_r = log_error_errno(ELIBBAD, "%s has no %s: %s", MHD_SONAME, syms[i].name,
                                                 why ? why : "not found");
                        (void)dlclose(lib);
                        return;
                }
                /* POSIX: dlsym()'s void * holds a function pointer (dlsym(3)) */
                memcpy(syms[i].slot, &p, sizeof p);
        }
        mhd = fns; /* lib stays open for the life of the process */
}

int mhd_load(void)
{
        int r = pthread_once(&load_once, load);
        return r ? -r : load_r;
}
