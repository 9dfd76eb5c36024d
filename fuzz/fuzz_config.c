/*
 * fuzz_config.c - the JSON config file (gateway/config.h): every option key
 * and the namespaces section, through hr_config_load as `--config FILE`.
 *
 * The input becomes the file's content (an in-memory file, rewritten for
 * each input). Invariants: a refused file always explains itself in err;
 * an accepted one always has the default namespace, which channels of
 * unknown namespaces and channels without one fall back to.
 */
#include "fuzz.h"
#include "gateway/config.h"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int g_fd = -1;
static char g_path[64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (g_fd < 0) {
        g_fd = memfd_create("herald-fuzz-config", MFD_CLOEXEC);
        FUZZ_ASSERT(g_fd >= 0);
        snprintf(g_path, sizeof(g_path), "/proc/self/fd/%d", g_fd);
    }
    FUZZ_ASSERT(ftruncate(g_fd, 0) == 0);
    FUZZ_ASSERT(pwrite(g_fd, data, size, 0) == (ssize_t)size);

    hr_config cfg;
    char err[512] = "";
    char *argv[] = {"--config", g_path, NULL};
    char *env[] = {NULL};
    hr_config_defaults(&cfg);
    if (hr_config_load(&cfg, 2, argv, env, err, sizeof(err)) < 0) {
        FUZZ_ASSERT(err[0] != '\0' && memchr(err, '\0', sizeof(err)));
    } else {
        static const char *const channels[] = {"news", "chat:room", ":x", "a:b:c", "user:42", ""};
        /* no namespace can be named "no such" (spaces are not allowed), and
         * a channel without ':' is in the default namespace */
        const auth_namespace *dflt = hr_config_namespace(&cfg, "no such:x");
        FUZZ_ASSERT(dflt && (!dflt->name || !dflt->name[0]));
        FUZZ_ASSERT(hr_config_namespace(&cfg, "plain") == dflt);
        for (size_t i = 0; i < sizeof(channels) / sizeof(channels[0]); i++)
            FUZZ_ASSERT(hr_config_namespace(&cfg, channels[i]) != NULL);
        for (size_t i = 0; i < cfg.nnamespaces; i++)
            FUZZ_ASSERT(cfg.namespaces[i].name != NULL);
        auth_jwt_settings js;
        hr_config_jwt_settings(&cfg, &js);
        FUZZ_ASSERT(hr_config_store(&cfg) != NULL && hr_config_store_target(&cfg) != NULL);
    }
    hr_config_clear(&cfg);
    return 0;
}
