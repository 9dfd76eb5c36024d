/*
 * tests/unit/auth/username.c - usernames as RFC 8265 UsernameCaseMapped (auth/username.c):
 * every look-alike class of the "Hardening" issue, the rules around them,
 * and the legacy key of names registered before.
 */
#include "auth/auth.h"
#include "testing.h"

#include <stdlib.h>

/* The key of name, or "" when it is refused (never NULL: CHECK_STR). */
static char g_key[256], g_display[256], g_err[256];

static int prep(const char *name)
{
    char *d = NULL, *k = NULL;
    g_key[0] = g_display[0] = g_err[0] = '\0';
    int rc = auth_username_prepare(name, &d, &k, g_err, sizeof(g_err));
    if (rc == 0) {
        snprintf(g_key, sizeof(g_key), "%s", k);
        snprintf(g_display, sizeof(g_display), "%s", d);
    }
    free(d);
    free(k);
    return rc;
}

/* name is accepted, shown as display and compared as key */
#define ACCEPT(name, display, key)                                                                 \
    do {                                                                                           \
        CHECK(prep(name) == 0);                                                                    \
        CHECK_STR(g_display, display);                                                             \
        CHECK_STR(g_key, key);                                                                     \
    } while (0)

/* name is refused and the message mentions `why` */
#define REFUSE(name, why)                                                                          \
    do {                                                                                           \
        CHECK(prep(name) < 0);                                                                     \
        if (!strstr(g_err, why))                                                                   \
            fprintf(stderr, "  message for %s: %s\n", #name, g_err);                               \
        CHECK(strstr(g_err, why) != NULL);                                                         \
    } while (0)

/* The classes: each look-alike of "alice" / "José" either maps to
 * the same key (so registration answers 409) or is refused (422). */

static void trailing_spaces(void)
{
    REFUSE("alice\xc2\xa0", "U+00A0");     /* no-break space */
    REFUSE("alice\xe2\x80\xaf", "U+202F"); /* narrow no-break space */
    REFUSE("alice\xe2\x80\x83", "U+2003"); /* em space */
    REFUSE("alice\xe3\x80\x80", "U+3000"); /* ideographic space (width-maps to U+0020) */
    REFUSE("alice ", "space");             /* ASCII: no edge spaces */
    REFUSE(" alice", "space");
    REFUSE("al  ice", "two in a row");
    ACCEPT("Alice Smith", "Alice Smith", "alice smith"); /* single inner spaces are fine */
}

static void zero_width(void)
{
    REFUSE("alice\xe2\x80\x8b", "U+200B"); /* zero width space */
    REFUSE("al\xe2\x80\x8bice", "U+200B");
    REFUSE("alice\xe2\x81\xa0", "U+2060"); /* word joiner */
    REFUSE("alice\xef\xbb\xbf", "U+FEFF"); /* BOM / ZWNBSP */
    REFUSE("ali\xc2\xad"
           "ce",
           "U+00AD");                      /* soft hyphen */
    REFUSE("alice\xef\xb8\x8f", "U+FE0F"); /* variation selector */
    REFUSE("alice\xe2\x80\x8d", "U+200D"); /* ZWJ after a Latin letter */
    REFUSE("alice\xe2\x80\x8c", "U+200C"); /* ZWNJ between non-joining letters */
    /* ...but allowed where RFC 5892 needs them: after a virama (Devanagari
     * conjuncts) and ZWNJ between joining Arabic/Persian letters */
    ACCEPT("\xe0\xa4\x95\xe0\xa5\x8d\xe2\x80\x8d\xe0\xa4\xb7", "क्‍ष", "क्‍ष");
    ACCEPT("\xd9\x85\xdb\x8c\xe2\x80\x8c\xd8\xae\xd9\x88\xd8\xa7\xd9\x87\xd9\x85",
           "می‌خواهم", "می‌خواهم");
}

static void bidi_controls(void)
{
    REFUSE("\xe2\x80\xae"
           "ecila",
           "U+202E");                      /* right-to-left override */
    REFUSE("alice\xe2\x80\xad", "U+202D"); /* left-to-right override */
    REFUSE("alice\xe2\x80\x8f", "U+200F"); /* right-to-left mark */
    REFUSE("alice\xe2\x81\xa6", "U+2066"); /* left-to-right isolate */
    /* the Bidi Rule: RTL names must not reorder around LTR or digits */
    ACCEPT("שלום", "שלום", "שלום");
    ACCEPT("bob שלום", "bob שלום", "bob שלום");
    REFUSE("1שלום", "Bidi Rule");
    REFUSE("abcשלום", "Bidi Rule");
    REFUSE("שלום1abc", "Bidi Rule");
}

static void decomposed(void)
{
    ACCEPT("Jos\xc3\xa9", "José", "josé");  /* precomposed é */
    ACCEPT("Jose\xcc\x81", "José", "josé"); /* e + U+0301: stored precomposed */
    ACCEPT("JOSE\xcc\x81", "JOSÉ", "josé");
    ACCEPT("\xea\xb0\x80", "가", "가");            /* a precomposed Hangul syllable */
    REFUSE("\xe1\x84\x80\xe1\x85\xa1", "U+1100");  /* conjoining jamo, not the syllable */
    REFUSE("e\xcc\x81\xcc\x81", "combining mark"); /* the same mark twice */
    REFUSE("\xe2\x84\xab", "U+212B");              /* ANGSTROM SIGN (singleton to Å) */
}

static void case_mapping(void)
{
    ACCEPT("ALICE", "ALICE", "alice");
    ACCEPT("JOSÉ", "JOSÉ", "josé"); /* non-ASCII letters too */
    ACCEPT("ΣΑΣ", "ΣΑΣ", "σας");    /* with final sigma */
    ACCEPT("ПРИМЕР", "ПРИМЕР", "пример");
    ACCEPT("straße", "straße", "straße");       /* toLowerCase, not case folding */
    ACCEPT("İstanbul", "İstanbul", "i̇stanbul"); /* no Turkish tailoring */
    REFUSE("\xe2\x84\xaa"
           "elvin",
           "U+212A"); /* KELVIN SIGN is no K */
}

static void width(void)
{
    ACCEPT("ａｌｉｃｅ", "alice", "alice"); /* fullwidth */
    ACCEPT("Ａｌｉｃｅ", "Alice", "alice");
    ACCEPT("ﾃｽﾄ", "テスト", "テスト"); /* halfwidth katakana */
    ACCEPT("ｶﾞ", "ガ", "ガ");          /* with its voiced mark, composed */
}

static void compat_and_symbols(void)
{
    REFUSE("\xef\xac\x81"
           "sh",
           "U+FB01");              /* ligature fi */
    REFUSE("x\xc2\xb2", "U+00B2"); /* superscript two */
    REFUSE("\xe2\x93\x90"
           "lice",
           "U+24D0"); /* circled a */
    REFUSE("\xf0\x9d\x90\x9a"
           "lice",
           "U+1D41A");                     /* mathematical bold a */
    REFUSE("\xe2\x85\xb0", "U+2170");      /* small roman numeral one */
    REFUSE("\xf0\x9f\x98\x80", "U+1F600"); /* emoji */
    REFUSE("a\xe2\x82\xac", "U+20AC");     /* euro sign */
    REFUSE("a\xe2\x80\x94"
           "b",
           "U+2014"); /* em dash */
    REFUSE("tab\there", "U+0009");
    REFUSE("del\x7f", "U+007F");
    REFUSE("c1\xc2\x85", "U+0085");
    REFUSE("\xee\x80\x80", "U+E000"); /* private use */
    REFUSE("\xcd\xb8", "unassigned"); /* U+0378 */
    REFUSE("\xef\xb7\x90", "U+FDD0"); /* noncharacter */
    /* ASCII punctuation and symbols are identifiers' own (ASCII7) */
    ACCEPT("O'Brien", "O'Brien", "o'brien");
    ACCEPT("x;y\\z\"", "x;y\\z\"", "x;y\\z\"");
    ACCEPT("robert'); DROP TABLE users;--", "robert'); DROP TABLE users;--",
           "robert'); drop table users;--");
    /* contextual exceptions of RFC 5892 */
    ACCEPT("col\xc2\xb7legi", "col·legi", "col·legi"); /* Catalan l·l */
    REFUSE("a\xc2\xb7"
           "b",
           "U+00B7");
}

static void mixed_scripts(void)
{
    REFUSE("p\xd0\xb0ypal", "scripts"); /* Cyrillic а among Latin */
    REFUSE("\xce\xbf"
           "pen",
           "scripts");                    /* Greek ο among Latin */
    ACCEPT("пример", "пример", "пример"); /* one script: fine */
    ACCEPT("ελληνικά", "ελληνικά", "ελληνικά");
    ACCEPT("名前", "名前", "名前");
    ACCEPT("テスト漢字abc", "テスト漢字abc", "テスト漢字abc"); /* Japanese + Latin */
    ACCEPT("abc 한국어", "abc 한국어", "abc 한국어");
    REFUSE("1\xd9\xa1", "Bidi Rule"); /* ASCII and Arabic-Indic digits */
    REFUSE("\xe0\xa5\xa7"
           "1",
           "digits"); /* Devanagari and ASCII digits */
}

static void lengths_and_encoding(void)
{
    char max[65], over[66];
    memset(max, 'a', 64);
    max[64] = '\0';
    memset(over, 'a', 65);
    over[65] = '\0';
    ACCEPT(max, max, max);
    REFUSE(over, "1-64 bytes");
    REFUSE("", "1-64 bytes");
    CHECK(auth_username_prepare(NULL, NULL, NULL, g_err, sizeof(g_err)) < 0);
    /* 22 fullwidth letters are 66 bytes in, 22 out: the output counts */
    ACCEPT("ａａａａａａａａａａａａａａａａａａａａａａ", "aaaaaaaaaaaaaaaaaaaaaa",
           "aaaaaaaaaaaaaaaaaaaaaa");
    static const char *bad_utf8[] = {"\xc3\x28", "\xc0\xaf",         "\xed\xa0\x80",
                                     "\xe5\x90", "\xf4\x90\x80\x80", "\xff"};
    for (size_t i = 0; i < sizeof(bad_utf8) / sizeof(bad_utf8[0]); i++)
        REFUSE(bad_utf8[i], "UTF-8");
}

/* Enforcement is idempotent: the display and key forms are fixed points. */
static void idempotent(void)
{
    static const char *names[] = {"Jose\xcc\x81", "Ａｌｉｃｅ", "ΣΑΣ",
                                  "İstanbul",     "ﾃｽﾄ",        "bob שלום"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        CHECK(prep(names[i]) == 0);
        char display[256], key[256];
        snprintf(display, sizeof(display), "%s", g_display);
        snprintf(key, sizeof(key), "%s", g_key);
        CHECK(prep(display) == 0);
        CHECK_STR(g_display, display);
        CHECK_STR(g_key, key);
        CHECK(prep(key) == 0);
        CHECK_STR(g_key, key);
    }
}

static void keys(void)
{
    char *k = auth_username_key("AbC-名前-É");
    CHECK_STR(k, "abc-名前-é");
    free(k);
    /* a name the rules refuse keeps its legacy key (old accounts) */
    k = auth_username_key("Alice\xc2\xa0");
    CHECK_STR(k, "alice\xc2\xa0");
    free(k);
    k = auth_username_legacy_key("JOSÉ");
    CHECK_STR(k, "josÉ"); /* the old ASCII-only fold */
    free(k);
    CHECK(auth_username_invalid("alice") == NULL);
    CHECK(auth_username_invalid("alice\xe2\x80\x8b") != NULL);
    /* the password must not spell the name in another form either */
    CHECK(auth_password_weak("ＡＬＩＣＥ-the-great", "alice-the-great") != NULL);
}

int main(void)
{
    RUN(trailing_spaces);
    RUN(zero_width);
    RUN(bidi_controls);
    RUN(decomposed);
    RUN(case_mapping);
    RUN(width);
    RUN(compat_and_symbols);
    RUN(mixed_scripts);
    RUN(lengths_and_encoding);
    RUN(idempotent);
    RUN(keys);
    return TEST_DONE();
}
