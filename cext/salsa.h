/* Salsa20/8 written once over an element type: scalar words, or vectors of one word from many
 * hashes (lane-sliced). SALSA_ROTL and SALSA_T are set by the includer. */
#ifndef DOGE_SALSA_H
#define DOGE_SALSA_H

/* x[0..15] = Salsa20/8(x); x holds the input, which the feed-forward adds back. */
#define SALSA20_8(SALSA_T, SALSA_ROTL, x)                                                          \
    do {                                                                                           \
        SALSA_T x0 = x[0], x1 = x[1], x2 = x[2], x3 = x[3], x4 = x[4], x5 = x[5], x6 = x[6],        \
                x7 = x[7], x8 = x[8], x9 = x[9], x10 = x[10], x11 = x[11], x12 = x[12],             \
                x13 = x[13], x14 = x[14], x15 = x[15];                                             \
        for (int rnd_ = 0; rnd_ < 8; rnd_ += 2) {                                                  \
            x4 ^= SALSA_ROTL(x0 + x12, 7);  x9 ^= SALSA_ROTL(x5 + x1, 7);                           \
            x14 ^= SALSA_ROTL(x10 + x6, 7); x3 ^= SALSA_ROTL(x15 + x11, 7);                         \
            x8 ^= SALSA_ROTL(x4 + x0, 9);   x13 ^= SALSA_ROTL(x9 + x5, 9);                          \
            x2 ^= SALSA_ROTL(x14 + x10, 9); x7 ^= SALSA_ROTL(x3 + x15, 9);                          \
            x12 ^= SALSA_ROTL(x8 + x4, 13); x1 ^= SALSA_ROTL(x13 + x9, 13);                         \
            x6 ^= SALSA_ROTL(x2 + x14, 13); x11 ^= SALSA_ROTL(x7 + x3, 13);                         \
            x0 ^= SALSA_ROTL(x12 + x8, 18); x5 ^= SALSA_ROTL(x1 + x13, 18);                         \
            x10 ^= SALSA_ROTL(x6 + x2, 18); x15 ^= SALSA_ROTL(x11 + x7, 18);                        \
            x1 ^= SALSA_ROTL(x0 + x3, 7);   x6 ^= SALSA_ROTL(x5 + x4, 7);                           \
            x11 ^= SALSA_ROTL(x10 + x9, 7); x12 ^= SALSA_ROTL(x15 + x14, 7);                        \
            x2 ^= SALSA_ROTL(x1 + x0, 9);   x7 ^= SALSA_ROTL(x6 + x5, 9);                           \
            x8 ^= SALSA_ROTL(x11 + x10, 9); x13 ^= SALSA_ROTL(x12 + x15, 9);                        \
            x3 ^= SALSA_ROTL(x2 + x1, 13);  x4 ^= SALSA_ROTL(x7 + x6, 13);                          \
            x9 ^= SALSA_ROTL(x8 + x11, 13); x14 ^= SALSA_ROTL(x13 + x12, 13);                       \
            x0 ^= SALSA_ROTL(x3 + x2, 18);  x5 ^= SALSA_ROTL(x4 + x7, 18);                          \
            x10 ^= SALSA_ROTL(x9 + x8, 18); x15 ^= SALSA_ROTL(x14 + x13, 18);                       \
        }                                                                                          \
        x[0] += x0; x[1] += x1; x[2] += x2; x[3] += x3; x[4] += x4; x[5] += x5; x[6] += x6;        \
        x[7] += x7; x[8] += x8; x[9] += x9; x[10] += x10; x[11] += x11; x[12] += x12;               \
        x[13] += x13; x[14] += x14; x[15] += x15;                                                  \
    } while (0)

#endif
