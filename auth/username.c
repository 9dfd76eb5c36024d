/*
 * username.c - when two usernames are the same name (see auth.h,
 * "Usernames").
 *
 * The model is RFC 8265: a username is userparts separated by single
 * ASCII spaces, and each userpart is enforced with the UsernameCaseMapped
 * profile of the PRECIS IdentifierClass (RFC 8264):
 *
 *   1. width mapping: fullwidth and halfwidth forms become their
 *      decomposition ("ａｌｉｃｅ" is "alice");
 *   2. the IdentifierClass: letters, marks and digits of any script, and
 *      printable ASCII; refused are controls, every space but the
 *      separator (NBSP, ideographic space...), default-ignorable code
 *      points (zero-width characters, bidi controls, soft hyphen,
 *      variation selectors), symbols and punctuation outside ASCII (emoji
 *      included), compatibility characters (ligatures, superscripts,
 *      circled or mathematical letters, the Kelvin sign), conjoining jamo
 *      and unassigned code points; ZWJ/ZWNJ and the other RFC 5892
 *      exceptions only in their contexts;
 *   3. case mapping (Unicode toLowerCase, no locale tailoring) for the
 *      key only: the display form keeps its case (UsernameCasePreserved);
 *   4. NFC, so "José" typed as e + U+0301 is the precomposed name;
 *   5. the Bidi Rule (RFC 5893) on every userpart of a name that has
 *      right-to-left characters;
 *   6. the rules applied again until the result is stable (RFC 8264 §7).
 *
 * Beyond RFC 8265, one rule from Unicode's UTS #39 (the restriction level
 * "moderately restrictive"): a name may not mix Latin with Cyrillic or
 * Greek, or two non-Latin scripts other than the CJK combinations, nor
 * digits of two numbering systems, nor repeat a combining mark - the
 * usual spellings of a look-alike ("pаypal" with a Cyrillic "а").
 * Names written entirely in another script stay allowed, so a name that
 * only looks like another one in a different script is not caught.
 *
 * The Unicode data (categories, decompositions, case mappings, NFC,
 * bidi classes, scripts) comes from ICU, the Unicode Consortium's own
 * library, instead of tables kept in this repository.
 */
#include "auth/auth.h"
#include "common/common.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/uscript.h>
#include <unicode/uspoof.h>
#include <unicode/ustring.h>

#define USERNAME_MAX 64 /* bytes of each enforced form */
#define INPUT_MAX 256   /* bytes of the input: bounds the work on garbage */
#define CP_CAP 1024     /* code points of any intermediate form */
#define STABLE_ROUNDS 4 /* RFC 8264 §7: the first pass and three more */
#define VIRAMA_CCC 9    /* Canonical_Combining_Class of a virama */

/* A code point sequence; the work buffers of enforcement. */
typedef struct cps {
    UChar32 c[CP_CAP];
    size_t n;
} cps;

/*---- UTF-8 -----------------------------------------------------------------*/

/* Decodes s into out; -1 if s is not well-formed UTF-8 or too long. */
static int decode(const char *s, size_t n, cps *out)
{
    const unsigned char *p = (const unsigned char *)s;
    out->n = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len = hr_utf8_decode(p + i, n - i, &cp);
        if (len == 0 || out->n == CP_CAP)
            return -1;
        out->c[out->n++] = (UChar32)cp;
        i += len;
    }
    return 0;
}

/* Encodes in as a malloc'ed NUL-terminated string (*len bytes). */
static char *encode(const cps *in, size_t *len)
{
    char *s = hr_malloc(in->n * 4 + 1), *p = s;
    for (size_t i = 0; i < in->n; i++) {
        uint32_t c = (uint32_t)in->c[i];
        if (c < 0x80) {
            *p++ = (char)c;
        } else if (c < 0x800) {
            *p++ = (char)(0xc0 | c >> 6);
            *p++ = (char)(0x80 | (c & 0x3f));
        } else if (c < 0x10000) {
            *p++ = (char)(0xe0 | c >> 12);
            *p++ = (char)(0x80 | ((c >> 6) & 0x3f));
            *p++ = (char)(0x80 | (c & 0x3f));
        } else {
            *p++ = (char)(0xf0 | c >> 18);
            *p++ = (char)(0x80 | ((c >> 12) & 0x3f));
            *p++ = (char)(0x80 | ((c >> 6) & 0x3f));
            *p++ = (char)(0x80 | (c & 0x3f));
        }
    }
    *p = '\0';
    *len = (size_t)(p - s);
    return s;
}

/*---- The IdentifierClass (RFC 8264 §4.2, §9) -------------------------------*/

typedef enum id_class {
    ID_PVALID,
    ID_CONTEXT, /* valid only where its RFC 5892 rule holds */
    ID_UNASSIGNED,
    ID_CONTROL,
    ID_SPACE,
    ID_INVISIBLE, /* default-ignorable or noncharacter */
    ID_JAMO,
    ID_COMPAT,
    ID_SYMBOL, /* symbols and punctuation */
    ID_OTHER,
} id_class;

/* Why a class is refused, for the error message. */
static const char *class_reason(id_class k)
{
    switch (k) {
    case ID_UNASSIGNED:
        return "an unassigned code point";
    case ID_CONTROL:
        return "a control character";
    case ID_SPACE:
        return "a space (only single ASCII spaces between words are allowed)";
    case ID_INVISIBLE:
        return "an invisible or formatting character (zero-width, bidi control, ...)";
    case ID_JAMO:
        return "a conjoining Hangul jamo (write the precomposed syllable)";
    case ID_COMPAT:
        return "a compatibility character (ligature, superscript, styled or circled letter, "
               "...): write its plain form";
    case ID_SYMBOL:
        return "a symbol or punctuation mark outside ASCII";
    case ID_CONTEXT:
        return "a joiner or sign that is not allowed in this position (RFC 5892)";
    default:
        return "a character not allowed in usernames";
    }
}

/* RFC 5892 §2.6: code points whose derived property is fixed by hand. */
static int exception_class(UChar32 c, id_class *k)
{
    switch (c) {
    case 0x00df: /* sharp s */
    case 0x03c2: /* final sigma */
    case 0x06fd:
    case 0x06fe:
    case 0x0f0b:
    case 0x3007:
        *k = ID_PVALID;
        return 1;
    case 0x00b7: /* middle dot */
    case 0x0375: /* Greek lower numeral sign */
    case 0x05f3: /* Hebrew geresh */
    case 0x05f4: /* Hebrew gershayim */
    case 0x30fb: /* katakana middle dot */
        *k = ID_CONTEXT;
        return 1;
    case 0x0640: /* tatweel */
    case 0x07fa:
    case 0x302e:
    case 0x302f:
    case 0x3031:
    case 0x3032:
    case 0x3033:
    case 0x3034:
    case 0x3035:
    case 0x303b:
        *k = ID_OTHER;
        return 1;
    }
    if ((c >= 0x0660 && c <= 0x0669) || (c >= 0x06f0 && c <= 0x06f9)) {
        *k = ID_CONTEXT; /* Arabic-Indic digits: one set per userpart */
        return 1;
    }
    return 0;
}

/* HasCompat: toNFKC(cp) != cp. */
static int has_compat(UChar32 c)
{
    UErrorCode e = U_ZERO_ERROR;
    const UNormalizer2 *nfkc = unorm2_getNFKCInstance(&e);
    UChar buf[2];
    int32_t len = 0;
    U16_APPEND_UNSAFE(buf, len, c);
    UBool normal = U_SUCCESS(e) ? unorm2_isNormalized(nfkc, buf, len, &e) : 0;
    return U_SUCCESS(e) ? !normal : 1;
}

/* The derived property of RFC 8264 §8, for the IdentifierClass. */
static id_class id_class_of(UChar32 c)
{
    id_class k;
    if (exception_class(c, &k))
        return k;
    int8_t gc = u_charType(c);
    int nonchar = u_hasBinaryProperty(c, UCHAR_NONCHARACTER_CODE_POINT);
    if (gc == U_UNASSIGNED && !nonchar)
        return ID_UNASSIGNED;
    if (c >= 0x21 && c <= 0x7e)
        return ID_PVALID;
    if (u_hasBinaryProperty(c, UCHAR_JOIN_CONTROL))
        return ID_CONTEXT;
    int hst = u_getIntPropertyValue(c, UCHAR_HANGUL_SYLLABLE_TYPE);
    if (hst == U_HST_LEADING_JAMO || hst == U_HST_VOWEL_JAMO || hst == U_HST_TRAILING_JAMO)
        return ID_JAMO;
    if (nonchar || u_hasBinaryProperty(c, UCHAR_DEFAULT_IGNORABLE_CODE_POINT))
        return ID_INVISIBLE;
    if (gc == U_CONTROL_CHAR)
        return ID_CONTROL;
    if (gc == U_SPACE_SEPARATOR) /* before HasCompat (NBSP has a compat */
        return ID_SPACE;         /* mapping): the same verdict, a clearer message */
    if (has_compat(c))
        return ID_COMPAT;
    switch (gc) {
    case U_LOWERCASE_LETTER:
    case U_UPPERCASE_LETTER:
    case U_OTHER_LETTER:
    case U_DECIMAL_DIGIT_NUMBER:
    case U_MODIFIER_LETTER:
    case U_NON_SPACING_MARK:
    case U_COMBINING_SPACING_MARK:
        return ID_PVALID;
    case U_MATH_SYMBOL:
    case U_CURRENCY_SYMBOL:
    case U_MODIFIER_SYMBOL:
    case U_OTHER_SYMBOL:
    case U_CONNECTOR_PUNCTUATION:
    case U_DASH_PUNCTUATION:
    case U_START_PUNCTUATION:
    case U_END_PUNCTUATION:
    case U_INITIAL_PUNCTUATION:
    case U_FINAL_PUNCTUATION:
    case U_OTHER_PUNCTUATION:
        return ID_SYMBOL;
    default: /* Lt, Nl, No, Me, Cf, Co, Zl, Zp */
        return ID_OTHER;
    }
}

static int script_of(UChar32 c)
{
    UErrorCode e = U_ZERO_ERROR;
    UScriptCode s = uscript_getScript(c, &e);
    return U_SUCCESS(e) ? (int)s : -1;
}

/* Joining_Type L or D before position i (skipping transparent ones), and
 * R or D after it: the ZWNJ context of RFC 5892 A.1. */
static int zwnj_joins(const UChar32 *l, size_t n, size_t i)
{
    int before = 0, after = 0;
    for (size_t j = i; j-- > 0;) {
        int jt = u_getIntPropertyValue(l[j], UCHAR_JOINING_TYPE);
        if (jt == U_JT_TRANSPARENT)
            continue;
        before = jt == U_JT_LEFT_JOINING || jt == U_JT_DUAL_JOINING;
        break;
    }
    for (size_t j = i + 1; j < n; j++) {
        int jt = u_getIntPropertyValue(l[j], UCHAR_JOINING_TYPE);
        if (jt == U_JT_TRANSPARENT)
            continue;
        after = jt == U_JT_RIGHT_JOINING || jt == U_JT_DUAL_JOINING;
        break;
    }
    return before && after;
}

static int has_in_range(const UChar32 *l, size_t n, UChar32 lo, UChar32 hi)
{
    for (size_t j = 0; j < n; j++)
        if (l[j] >= lo && l[j] <= hi)
            return 1;
    return 0;
}

/* RFC 5892 Appendix A: may the CONTEXTJ/CONTEXTO code point l[i] stand
 * there (l is one userpart)? */
static int context_ok(const UChar32 *l, size_t n, size_t i)
{
    UChar32 c = l[i];
    int virama_before = i > 0 && u_getCombiningClass(l[i - 1]) == VIRAMA_CCC;
    switch (c) {
    case 0x200c: /* ZWNJ */
        return virama_before || zwnj_joins(l, n, i);
    case 0x200d: /* ZWJ */
        return virama_before;
    case 0x00b7: /* Catalan l·l */
        return i > 0 && i + 1 < n && l[i - 1] == 0x6c && l[i + 1] == 0x6c;
    case 0x0375:
        return i + 1 < n && script_of(l[i + 1]) == USCRIPT_GREEK;
    case 0x05f3:
    case 0x05f4:
        return i > 0 && script_of(l[i - 1]) == USCRIPT_HEBREW;
    case 0x30fb:
        for (size_t j = 0; j < n; j++) {
            int s = script_of(l[j]);
            if (j != i && (s == USCRIPT_HIRAGANA || s == USCRIPT_KATAKANA || s == USCRIPT_HAN))
                return 1;
        }
        return 0;
    }
    if (c >= 0x0660 && c <= 0x0669)
        return !has_in_range(l, n, 0x06f0, 0x06f9);
    if (c >= 0x06f0 && c <= 0x06f9)
        return !has_in_range(l, n, 0x0660, 0x0669);
    return 0;
}

/* Checks one userpart against the IdentifierClass; with contexts, also
 * the contextual rules (they are judged on the final form only). */
static int check_class(const UChar32 *l, size_t n, int contexts, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        id_class k = id_class_of(l[i]);
        if (k == ID_PVALID || (k == ID_CONTEXT && (!contexts || context_ok(l, n, i))))
            continue;
        snprintf(err, errlen, "username must not contain U+%04X, %s", (unsigned)l[i],
                 class_reason(k));
        return -1;
    }
    return 0;
}

/*---- The Bidi Rule (RFC 5893 §2) -------------------------------------------*/

static int is_rtl(int d)
{
    return d == U_RIGHT_TO_LEFT || d == U_RIGHT_TO_LEFT_ARABIC || d == U_ARABIC_NUMBER;
}

/* The six conditions, on one userpart. */
static int bidi_label_ok(const UChar32 *l, size_t n)
{
    int first = u_charDirection(l[0]);
    int rtl = first == U_RIGHT_TO_LEFT || first == U_RIGHT_TO_LEFT_ARABIC;
    if (!rtl && first != U_LEFT_TO_RIGHT)
        return 0; /* 1 */
    int en = 0, an = 0;
    for (size_t i = 0; i < n; i++) {
        int d = u_charDirection(l[i]);
        int common = d == U_EUROPEAN_NUMBER || d == U_EUROPEAN_NUMBER_SEPARATOR ||
                     d == U_COMMON_NUMBER_SEPARATOR || d == U_EUROPEAN_NUMBER_TERMINATOR ||
                     d == U_OTHER_NEUTRAL || d == U_BOUNDARY_NEUTRAL || d == U_DIR_NON_SPACING_MARK;
        if (rtl && !common && d != U_RIGHT_TO_LEFT && d != U_RIGHT_TO_LEFT_ARABIC &&
            d != U_ARABIC_NUMBER)
            return 0; /* 2 */
        if (!rtl && !common && d != U_LEFT_TO_RIGHT)
            return 0; /* 5 */
        en |= d == U_EUROPEAN_NUMBER;
        an |= d == U_ARABIC_NUMBER;
    }
    size_t end = n;
    while (end > 0 && u_charDirection(l[end - 1]) == U_DIR_NON_SPACING_MARK)
        end--;
    if (end == 0)
        return 0;
    int last = u_charDirection(l[end - 1]);
    if (rtl)
        return (last == U_RIGHT_TO_LEFT || last == U_RIGHT_TO_LEFT_ARABIC ||
                last == U_EUROPEAN_NUMBER || last == U_ARABIC_NUMBER) &&
               !(en && an);                                      /* 3, 4 */
    return last == U_LEFT_TO_RIGHT || last == U_EUROPEAN_NUMBER; /* 6 */
}

/* RFC 8265 applies the Bidi Rule to names with right-to-left characters;
 * as IDNA does for domain names, every userpart of such a name must then
 * satisfy it, so no part can reorder its neighbours on screen. */
static int bidi_ok(const cps *s)
{
    int any = 0;
    for (size_t i = 0; i < s->n && !any; i++)
        any = is_rtl(u_charDirection(s->c[i]));
    for (size_t i = 0; any && i < s->n;) {
        size_t j = i;
        while (j < s->n && s->c[j] != 0x20)
            j++;
        if (!bidi_label_ok(s->c + i, j - i))
            return 0;
        i = j + 1;
    }
    return 1;
}

/*---- Enforcement -----------------------------------------------------------*/

/* Width mapping (RFC 8265 §3.3.1 rule 1): <wide> and <narrow>
 * compatibility characters become their decomposition. */
static int width_map(const UChar32 *in, size_t n, cps *out)
{
    UErrorCode e = U_ZERO_ERROR;
    const UNormalizer2 *nfkc = unorm2_getNFKCInstance(&e);
    out->n = 0;
    for (size_t i = 0; i < n && U_SUCCESS(e); i++) {
        int dt = u_getIntPropertyValue(in[i], UCHAR_DECOMPOSITION_TYPE);
        UChar d[8];
        int32_t dn = -1;
        if (dt == U_DT_WIDE || dt == U_DT_NARROW)
            dn = unorm2_getRawDecomposition(nfkc, in[i], d, 8, &e);
        if (dn < 0) {
            if (out->n == CP_CAP)
                return -1;
            out->c[out->n++] = in[i];
            continue;
        }
        for (int32_t k = 0; k < dn;) {
            UChar32 c;
            U16_NEXT(d, k, dn, c);
            if (out->n == CP_CAP)
                return -1;
            out->c[out->n++] = c;
        }
    }
    return U_SUCCESS(e) ? 0 : -1;
}

/* s = NFC(lower ? toLowerCase(s) : s), through UTF-16 for ICU. The root
 * locale: no Turkish or Lithuanian tailoring, the same result everywhere. */
static int lower_nfc(cps *s, int lower)
{
    UChar u1[CP_CAP * 2], u2[CP_CAP * 2];
    UChar *src = u1, *dst = u2;
    UErrorCode e = U_ZERO_ERROR;
    int32_t n = 0, out = 0;
    u_strFromUTF32(src, CP_CAP * 2, &n, s->c, (int32_t)s->n, &e);
    if (lower && U_SUCCESS(e)) {
        n = u_strToLower(dst, CP_CAP * 2, src, n, "", &e);
        src = u2, dst = u1;
    }
    const UNormalizer2 *nfc = U_SUCCESS(e) ? unorm2_getNFCInstance(&e) : NULL;
    if (U_SUCCESS(e))
        n = unorm2_normalize(nfc, src, n, dst, CP_CAP * 2, &e);
    if (U_SUCCESS(e))
        u_strToUTF32(s->c, CP_CAP, &out, dst, n, &e);
    if (U_FAILURE(e))
        return -1;
    s->n = (size_t)out;
    return 0;
}

/* One pass of the profile over a whole name: each userpart is width
 * mapped, checked, (lowercased,) normalised and checked again with its
 * contexts; then the Bidi Rule. -1 with err when the name is refused. */
static int enforce(const cps *in, int lower, cps *out, char *err, size_t errlen)
{
    cps part;
    out->n = 0;
    for (size_t i = 0; i <= in->n;) {
        size_t j = i;
        while (j < in->n && in->c[j] != 0x20)
            j++;
        if (j == i) {
            snprintf(err, errlen,
                     "username must not start or end with a space, nor have two in a row");
            return -1;
        }
        for (size_t k = i; k < j; k++)                       /* named before width mapping turns */
            if (u_charType(in->c[k]) == U_SPACE_SEPARATOR) { /* U+3000 into U+0020 */
                snprintf(err, errlen, "username must not contain U+%04X, %s", (unsigned)in->c[k],
                         class_reason(ID_SPACE));
                return -1;
            }
        if (width_map(in->c + i, j - i, &part) < 0)
            goto too_long;
        if (check_class(part.c, part.n, 0, err, errlen) < 0)
            return -1;
        if (lower_nfc(&part, lower) < 0)
            goto too_long;
        if (check_class(part.c, part.n, 1, err, errlen) < 0)
            return -1;
        if (out->n + part.n + 1 > CP_CAP)
            goto too_long;
        if (out->n)
            out->c[out->n++] = 0x20;
        memcpy(out->c + out->n, part.c, part.n * sizeof(UChar32));
        out->n += part.n;
        i = j + 1;
    }
    if (!bidi_ok(out)) {
        snprintf(err, errlen,
                 "username mixes right-to-left and left-to-right text in a way that displays "
                 "ambiguously (RFC 5893 Bidi Rule)");
        return -1;
    }
    return 0;
too_long:
    snprintf(err, errlen, "username must be 1-%d bytes", USERNAME_MAX);
    return -1;
}

static int cps_eq(const cps *a, const cps *b)
{
    return a->n == b->n && !memcmp(a->c, b->c, a->n * sizeof(UChar32));
}

/* Applies the profile until the result stops changing (RFC 8264 §7: an
 * input still changing after the first pass and three more is refused). */
static int enforce_stable(const cps *in, int lower, cps *out, char *err, size_t errlen)
{
    cps *prev = hr_malloc(sizeof(cps));
    int rc = enforce(in, lower, out, err, errlen);
    for (int round = 1; rc == 0; round++) {
        *prev = *out;
        if (enforce(prev, lower, out, err, errlen) < 0) {
            rc = -1;
        } else if (cps_eq(prev, out)) {
            break;
        } else if (round == STABLE_ROUNDS) {
            snprintf(err, errlen, "username does not normalise to a stable form");
            rc = -1;
        }
    }
    free(prev);
    return rc;
}

/*---- Mixed scripts (UTS #39) -----------------------------------------------*/

static USpoofChecker *spoof;
static pthread_once_t spoof_once = PTHREAD_ONCE_INIT;

/* Built once and never freed: ICU's check functions take a const checker
 * and are safe to call from every thread at once. */
static void spoof_init(void)
{
    UErrorCode e = U_ZERO_ERROR;
    USpoofChecker *sc = uspoof_open(&e);
    uspoof_setChecks(sc, USPOOF_RESTRICTION_LEVEL | USPOOF_MIXED_NUMBERS | USPOOF_INVISIBLE, &e);
    uspoof_setRestrictionLevel(sc, USPOOF_MODERATELY_RESTRICTIVE);
    if (U_FAILURE(e)) {
        uspoof_close(sc);
        return;
    }
    spoof = sc;
}

static int scripts_ok(const char *name, size_t len, char *err, size_t errlen)
{
    pthread_once(&spoof_once, spoof_init);
    UErrorCode e = U_ZERO_ERROR;
    int32_t r = spoof ? uspoof_checkUTF8(spoof, name, (int32_t)len, NULL, &e) : -1;
    if (!spoof || U_FAILURE(e)) {
        snprintf(err, errlen, "internal error: cannot check the username's scripts");
        return -1;
    }
    if (r & USPOOF_RESTRICTION_LEVEL)
        snprintf(err, errlen,
                 "username must not mix scripts that look alike (Latin with Cyrillic or "
                 "Greek, or two scripts besides Latin)");
    else if (r & USPOOF_MIXED_NUMBERS)
        snprintf(err, errlen, "username must not mix digits of different numbering systems");
    else if (r & USPOOF_INVISIBLE)
        snprintf(err, errlen, "username must not repeat a combining mark");
    return r & (USPOOF_RESTRICTION_LEVEL | USPOOF_MIXED_NUMBERS | USPOOF_INVISIBLE) ? -1 : 0;
}

/*---- Public API ------------------------------------------------------------*/

/* Both forms are enforced from the input (not one from the other), as the
 * two profiles of RFC 8265 are defined; they agree on validity except in
 * corner cases, where the name is refused. */
int auth_username_prepare(const char *username, char **display, char **key, char *err,
                          size_t errlen)
{
    size_t n = username ? strlen(username) : 0;
    char *d = NULL, *k = NULL;
    size_t dlen = 0, klen = 0;
    cps *in = hr_malloc(sizeof(cps)), *out = hr_malloc(sizeof(cps));
    int rc = -1;
    if (n == 0 || n > INPUT_MAX) {
        snprintf(err, errlen, "username must be 1-%d bytes", USERNAME_MAX);
        goto done;
    }
    if (decode(username, n, in) < 0) {
        snprintf(err, errlen, "username must be valid UTF-8");
        goto done;
    }
    if (enforce_stable(in, 0, out, err, errlen) < 0)
        goto done;
    d = encode(out, &dlen);
    if (enforce_stable(in, 1, out, err, errlen) < 0)
        goto done;
    k = encode(out, &klen);
    if (dlen > USERNAME_MAX || klen > USERNAME_MAX) {
        snprintf(err, errlen, "username must be 1-%d bytes", USERNAME_MAX);
        goto done;
    }
    if (scripts_ok(d, dlen, err, errlen) < 0)
        goto done;
    rc = 0;
done:
    if (rc == 0 && display)
        *display = d, d = NULL;
    if (rc == 0 && key)
        *key = k, k = NULL;
    free(d);
    free(k);
    free(in);
    free(out);
    return rc;
}

/* Valid until the next call on the same thread. */
const char *auth_username_invalid(const char *username)
{
    static _Thread_local char why[160];
    return auth_username_prepare(username, NULL, NULL, why, sizeof(why)) < 0 ? why : NULL;
}

char *auth_username_legacy_key(const char *username)
{
    char *key = hr_strdup(username);
    for (char *p = key; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p + ('a' - 'A'));
    return key;
}

char *auth_username_key(const char *username)
{
    char why[160], *key = NULL;
    if (auth_username_prepare(username, NULL, &key, why, sizeof(why)) < 0)
        return auth_username_legacy_key(username);
    return key;
}
