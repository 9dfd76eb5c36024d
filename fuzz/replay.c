/*
 * replay.c - runs a fuzz target over its corpus without libFuzzer.
 *
 * Linked with a fuzz_<name>.c in normal builds (gcc, and gcc with ASan +
 * UBSan in ./setup.sh test), so every CI run replays every checked-in input:
 * the seeds and the regression inputs of crashes found earlier. Arguments
 * are files or directories (their regular files, in name order); each input
 * is copied into a buffer of exactly its size, so a read past the end is an
 * ASan report. An empty corpus is an error: it would test nothing.
 */
#include "fuzz.h"

#include <dirent.h>
#include <string.h>
#include <sys/stat.h>

/* libFuzzer's optional hook; targets that need set-up define it. */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

/* Reads path and runs it; returns 1 when it ran, 0 when it could not be
 * read (reported). */
static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f || fstat(fileno(f), &st) < 0) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        if (f)
            fclose(f);
        return 0;
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf || fread(buf, 1, n, f) != n) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        free(buf);
        fclose(f);
        return 0;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    return 1;
}

static int not_hidden(const struct dirent *e)
{
    return e->d_name[0] != '.';
}

int main(int argc, char **argv)
{
    int ran = 0, unreadable = 0;
    if (LLVMFuzzerInitialize)
        LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) < 0) {
            fprintf(stderr, "replay: no such file or directory: %s\n", argv[i]);
            unreadable++;
        } else if (S_ISDIR(st.st_mode)) {
            struct dirent **list;
            int n = scandir(argv[i], &list, not_hidden, alphasort);
            for (int j = 0; j < n; j++) {
                char path[4096];
                snprintf(path, sizeof(path), "%s/%s", argv[i], list[j]->d_name);
                if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
                    if (run_file(path))
                        ran++;
                    else
                        unreadable++;
                }
                free(list[j]);
            }
            free(n >= 0 ? list : NULL);
        } else if (run_file(argv[i])) {
            ran++;
        } else {
            unreadable++;
        }
    }
    printf("replayed %d inputs\n", ran);
    return ran > 0 && unreadable == 0 ? 0 : 1;
}
