/* Unit tests for the keyed hash behind hr_map: SipHash-2-4 against the
 * reference vectors, key sensitivity, a per-process key, and the map still
 * behaving as a map. */
#include "common/common.h"
#include "testing.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* SipHash-2-4 with key 00 01 .. 0f of the messages 00 01 .. (n-1): the
 * vectors published with the paper (the reference lists each as 8 bytes,
 * least significant first; n = 15 is the paper's worked example). */
static void siphash_vectors(void)
{
    static const struct {
        size_t n;
        uint64_t h;
    } v[] = {
        {0, 0x726fdb47dd0e0e31ULL},  {1, 0x74f839c593dc67fdULL},  {2, 0x0d6c8009d9a94f5aULL},
        {3, 0x85676696d7fb7e2dULL},  {7, 0xab0200f58b01d137ULL},  {8, 0x93f5f5799a932462ULL},
        {15, 0xa129ca6149be45e5ULL}, {16, 0x3f2acc7f57c29bdbULL}, {63, 0x958a324ceb064572ULL},
    };
    unsigned char key[16], msg[64];
    for (int i = 0; i < 16; i++)
        key[i] = (unsigned char)i;
    for (int i = 0; i < 64; i++)
        msg[i] = (unsigned char)i;
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        uint64_t h = hr_siphash24(key, msg, v[i].n);
        if (h != v[i].h)
            fprintf(stderr, "  n=%zu: got %016llx, want %016llx\n", v[i].n, (unsigned long long)h,
                    (unsigned long long)v[i].h);
        CHECK(h == v[i].h);
    }
    CHECK(hr_siphash24(key, NULL, 0) == 0x726fdb47dd0e0e31ULL);
}

/* The same message under two keys (one bit apart) hashes differently: the
 * output depends on the key, which is what makes flooding impossible. */
static void siphash_key_matters(void)
{
    unsigned char k1[16] = {0}, k2[16] = {0};
    k2[15] = 0x80;
    const char *m = "chat:lobby";
    CHECK(hr_siphash24(k1, m, strlen(m)) != hr_siphash24(k2, m, strlen(m)));
    /* and the length is bound in: a trailing zero byte changes the hash */
    CHECK(hr_siphash24(k1, "a\0", 1) != hr_siphash24(k1, "a\0", 2));
}

/* Forks a child that hashes a fixed string with the process key (drawn in
 * the child, since the parent never hashed before forking) and returns it. */
static uint64_t child_hash(void)
{
    int fd[2];
    uint64_t h = 0;
    if (pipe(fd) < 0)
        return 0;
    pid_t pid = fork();
    if (pid == 0) {
        uint64_t mine = hr_hash("user:alice", 10);
        _exit(write(fd[1], &mine, sizeof(mine)) == sizeof(mine) ? 0 : 1);
    }
    close(fd[1]);
    if (pid < 0 || read(fd[0], &h, sizeof(h)) != sizeof(h))
        h = 0;
    close(fd[0]);
    if (pid > 0)
        waitpid(pid, NULL, 0);
    return h;
}

/* Every process draws its own key, so an attacker cannot precompute
 * colliding keys against one Herald run from another (or from the source).
 * Must run before anything in this process hashes: the key is drawn once,
 * and children forked after that would inherit it. */
static void process_key_is_random(void)
{
    uint64_t a = child_hash(), b = child_hash();
    CHECK(a != 0 && b != 0);
    CHECK(a != b); /* equal by chance with probability 2^-64 */
    /* a public constant key would be as predictable as no key */
    unsigned char zero[16] = {0};
    CHECK(hr_hash("user:alice", 10) != hr_siphash24(zero, "user:alice", 10));
    CHECK(hr_hash("user:alice", 10) == hr_hash("user:alice", 10));
}

/* The map behaves as before: many keys through growth, deletions leaving
 * tombstones, keys that differ only after a NUL byte. */
static void map_still_a_map(void)
{
    hr_map *m = hr_map_new(NULL);
    char k[32];
    for (intptr_t i = 0; i < 5000; i++) {
        int n = snprintf(k, sizeof(k), "chan:%ld", (long)i);
        hr_map_put(m, k, (size_t)n, (void *)(i + 1));
    }
    CHECK(hr_map_count(m) == 5000);
    for (intptr_t i = 0; i < 5000; i += 2) {
        int n = snprintf(k, sizeof(k), "chan:%ld", (long)i);
        CHECK(hr_map_del(m, k, (size_t)n) == (void *)(i + 1));
    }
    int bad = 0;
    for (intptr_t i = 0; i < 5000; i++) {
        int n = snprintf(k, sizeof(k), "chan:%ld", (long)i);
        void *want = i % 2 ? (void *)(i + 1) : NULL;
        bad += hr_map_get(m, k, (size_t)n) != want;
    }
    CHECK(bad == 0);
    CHECK(hr_map_count(m) == 2500);
    hr_map_put(m, "a\0b", 3, (void *)1);
    hr_map_put(m, "a\0c", 3, (void *)2);
    CHECK(hr_map_get(m, "a\0b", 3) == (void *)1 && hr_map_get(m, "a\0c", 3) == (void *)2);
    size_t it = 0, seen = 0;
    while (hr_map_next(m, &it, NULL, NULL, NULL))
        seen++;
    CHECK(seen == 2502);
    hr_map_free(m);
}

int main(void)
{
    RUN(process_key_is_random); /* first: see its comment */
    RUN(siphash_vectors);
    RUN(siphash_key_matters);
    RUN(map_still_a_map);
    return TEST_DONE();
}
