/* Float32 iterations of the convolutional barycenter, fused per group: the CPU warm start of
 * mixlab.ot.convolutional_barycenter (precision="mixed").
 *
 * The same iteration as mixlab/ot/barycenter.py (_iterate with _LogKernel(..., "image", floor=True) on boxed
 * images), one group of k images at a time, so that a group's arrays stay in the core's cache instead of
 * streaming the whole batch through memory once per operation. Compiled on first use by mixlab/ot/native.py
 * (plain C11 with GCC vector extensions; no Python or PyTorch headers) and called through ctypes.
 *
 * Per group, with potentials G_1..G_{k-1} (G_k = -sum_j (w_j / w_k) G_j), one iteration is
 *     e_i = exp(G_i - m_i)                    m_i = max G_i
 *     q_i = a_i / K e_i                       in the box around image i's support, floored
 *     s_i = K (q_i / max q_i)                 back on the grid, floored
 *     L_i = log s_i + c_i                     c_i = log max q_i - m_i  (L_i = log K u_i)
 *     err = sum_pixels std_i(e_i s_i max q_i) POT's criterion, on the plans before the update
 *     D_j = L_j - L_k,  F_j = sum_i w_i D_i - D_j - G_j   (the residual T(G)_j - G_j)
 * followed by Anderson mixing of G (history m, mixing parameter relax), exactly as _Anderson in Python.
 *
 * The result only starts the exact iterations in Python, which must meet the tolerance themselves: an error
 * here can cost iterations there, never accuracy.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef MIXLAB_MVEC /* glibc's vector math library: lets GCC vectorise the loops that call expf / logf */
float expf(float) __attribute__((simd("notinbranch")));
float logf(float) __attribute__((simd("notinbranch")));
#endif

typedef int64_t i64;
typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));
#define LOAD(p) (*(const v8u *)(p))
#define STORE(p, v) (*(v8u *)(p) = (v))

enum { MAX_K = 16, MAX_HISTORY = 8 };

/* C (M x N) = A (M x K, row stride lda) B (K x N, row stride ldb), row stride ldc; N a multiple of 8 (B may be
 * read up to N columns wide). Blocks of 4 rows x 16 columns held in registers. */
static void gemm(i64 M, i64 N, i64 K, const float *restrict A, i64 lda, const float *restrict B, i64 ldb,
                 float *restrict C, i64 ldc) {
    i64 i = 0;
    for (; i + 4 <= M; i += 4) {
        const float *a0 = A + i * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
        float *c = C + i * ldc;
        i64 j = 0;
        for (; j + 16 <= N; j += 16) {
            v8 c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0}, c30 = {0}, c31 = {0};
            const float *b = B + j;
            for (i64 l = 0; l < K; l++, b += ldb) {
                const v8 b0 = LOAD(b), b1 = LOAD(b + 8);
                c00 += a0[l] * b0; c01 += a0[l] * b1;
                c10 += a1[l] * b0; c11 += a1[l] * b1;
                c20 += a2[l] * b0; c21 += a2[l] * b1;
                c30 += a3[l] * b0; c31 += a3[l] * b1;
            }
            STORE(c + j, c00); STORE(c + j + 8, c01);
            STORE(c + ldc + j, c10); STORE(c + ldc + j + 8, c11);
            STORE(c + 2 * ldc + j, c20); STORE(c + 2 * ldc + j + 8, c21);
            STORE(c + 3 * ldc + j, c30); STORE(c + 3 * ldc + j + 8, c31);
        }
        for (; j < N; j += 8) {
            v8 c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0};
            const float *b = B + j;
            for (i64 l = 0; l < K; l++, b += ldb) {
                const v8 b0 = LOAD(b);
                c0 += a0[l] * b0; c1 += a1[l] * b0; c2 += a2[l] * b0; c3 += a3[l] * b0;
            }
            STORE(c + j, c0); STORE(c + ldc + j, c1); STORE(c + 2 * ldc + j, c2); STORE(c + 3 * ldc + j, c3);
        }
    }
    for (; i < M; i++) {
        const float *a0 = A + i * lda;
        for (i64 j = 0; j < N; j += 8) {
            v8 c0 = {0};
            const float *b = B + j;
            for (i64 l = 0; l < K; l++, b += ldb) c0 += a0[l] * LOAD(b);
            STORE(C + i * ldc + j, c0);
        }
    }
}

static float dot(const float *restrict x, const float *restrict y, i64 n) {
    float s = 0.f;
    for (i64 i = 0; i < n; i++) s += x[i] * y[i];
    return s;
}

/* Solves A x = b (n x n, row-major; both overwritten, x in b) by Gaussian elimination with partial pivoting.
 * Returns 0 (and leaves b undefined) when A is singular or the solution is not finite. */
static int solve(int n, double *A, double *b) {
    for (int c = 0; c < n; c++) {
        int p = c;
        for (int r = c + 1; r < n; r++)
            if (fabs(A[r * n + c]) > fabs(A[p * n + c])) p = r;
        if (!(fabs(A[p * n + c]) > 0)) return 0;
        if (p != c) {
            for (int j = 0; j < n; j++) {
                const double t = A[c * n + j]; A[c * n + j] = A[p * n + j]; A[p * n + j] = t;
            }
            const double t = b[c]; b[c] = b[p]; b[p] = t;
        }
        for (int r = c + 1; r < n; r++) {
            const double f = A[r * n + c] / A[c * n + c];
            for (int j = c; j < n; j++) A[r * n + j] -= f * A[c * n + j];
            b[r] -= f * b[c];
        }
    }
    for (int c = n - 1; c >= 0; c--) {
        double s = b[c];
        for (int j = c + 1; j < n; j++) s -= A[c * n + j] * b[j];
        b[c] = s / A[c * n + c];
    }
    for (int c = 0; c < n; c++)
        if (!isfinite(b[c])) return 0;
    return 1;
}

/* Iterates groups until each meets tol (or stalls for `patience` checks, or max_iter): groups are taken from the
 * shared `counter` (atomically), so several threads can call this on the same arguments.
 *
 * n, k, H, W: groups, images per group, grid. hb, wb: box size; r0, c0 (n, k): box corners.
 * a_box (n, k, hb, wbp): the images cut to their boxes, wbp = wb rounded up to 8, zero-padded.
 * kh (H, H), kw (W, W): the Gibbs kernel per axis (symmetric). wts (n, k): weights summing to one, largest last.
 * Outputs: g (n, k, H, W) potentials where each group stopped, niter (n,), err (n,) the last criterion.
 * Returns 0; 1 when memory runs out; 2 for arguments out of range (k, anderson, check_every). */
int mixlab_barycenter_f32(i64 n, i64 k, i64 H, i64 W, i64 hb, i64 wb, const float *a_box, const i64 *r0,
                          const i64 *c0, const float *kh, const float *kw, const float *wts, float *g_out,
                          i64 *niter_out, float *err_out, double tol, i64 max_iter, i64 check_every,
                          i64 anderson, double relax, i64 patience, float floor_at, i64 *counter) {
    if (k < 2 || k > MAX_K || anderson < 0 || anderson > MAX_HISTORY || check_every < 1) return 2;
    const i64 P = H * W, N = (k - 1) * P, m = anderson;
    const i64 Wp = (W + 7) / 8 * 8, wbp = (wb + 7) / 8 * 8, L = (W + 15) / 8 * 8, Bx = hb * wbp;
    const i64 T = (hb > H ? hb : H) * (Wp > wbp ? Wp : wbp);
    /* kw with rows zero-padded to L >= W + 8, so a row read from any box corner up to wbp wide stays in it;
     * E carries 8 floats of slack: its rows (stride W) are read Wp wide */
    const size_t floats = (size_t)(W * L + k * P + k * P + 8 + k * P + k * Bx + 2 * T + 5 * N + 2 * m * N);
    float *buf = (float *)calloc(floats, sizeof(float));
    if (!buf) return 1;
    float *kwp = buf, *G = kwp + W * L, *E = G + k * P, *S = E + k * P + 8, *Q = S + k * P, *tmp = Q + k * Bx;
    float *tmp2 = tmp + T, *D = tmp2 + T, *F = D + N, *Y = F + N, *f_prev = Y + N, *y_prev = f_prev + N;
    float *dF = y_prev + N, *dY = dF + m * N;
    for (i64 x = 0; x < W; x++) memcpy(kwp + x * L, kw + x * W, sizeof(float) * W);
    double gram[MAX_HISTORY * MAX_HISTORY], c[MAX_HISTORY], A[MAX_HISTORY * MAX_HISTORY], gamma[MAX_HISTORY];
    float maxq[MAX_K], shift[MAX_K];
    const float rel = (float)relax;

    for (;;) {
        const i64 grp = __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
        if (grp >= n) break;
        const float *a = a_box + grp * k * Bx, *w = wts + grp * k;
        const i64 *rows = r0 + grp * k, *cols = c0 + grp * k;
        const float w_last = w[k - 1];
        memset(G, 0, sizeof(float) * k * P);
        memset(dF, 0, sizeof(float) * 2 * m * N);
        memset(gram, 0, sizeof gram);
        memset(c, 0, sizeof c);
        i64 steps = 0, stalled = 0, it = 0;
        int first = 1;
        float best = INFINITY, err = INFINITY;
        for (;; it++) {
            float *last = G + (k - 1) * P;
            for (i64 p = 0; p < P; p++) last[p] = 0.f;
            for (i64 j = 0; j < k - 1; j++) {
                const float ratio = w[j] / w_last;
                for (i64 p = 0; p < P; p++) last[p] -= ratio * G[j * P + p];
            }
            for (i64 i = 0; i < k; i++) {
                const float *g = G + i * P;
                float *e = E + i * P, *q = Q + i * Bx, *s = S + i * P;
                float mx = -INFINITY;
                for (i64 p = 0; p < P; p++) mx = g[p] > mx ? g[p] : mx;
                for (i64 p = 0; p < P; p++) e[p] = expf(g[p] - mx);
                gemm(hb, Wp, H, kh + rows[i] * H, H, e, W, tmp, Wp);        /* K_H[box rows, :] e */
                gemm(hb, wbp, W, tmp, Wp, kwp + cols[i], L, q, wbp);        /* (...) K_W[:, box cols] */
                const float *ai = a + i * Bx;
                float mq = 0.f;
                for (i64 p = 0; p < Bx; p++) {
                    q[p] = ai[p] / (q[p] > floor_at ? q[p] : floor_at);     /* u e^m */
                    mq = q[p] > mq ? q[p] : mq;
                }
                const float inv = 1.f / mq;
                for (i64 p = 0; p < Bx; p++) q[p] *= inv;
                gemm(H, wbp, hb, kh + rows[i], H, q, wbp, tmp, wbp);        /* K_H[:, box rows] q */
                gemm(H, Wp, wb, tmp, wbp, kwp + cols[i] * L, L, tmp2, Wp);  /* (...) K_W[box cols, :] */
                for (i64 y = 0; y < H; y++)
                    for (i64 x = 0; x < W; x++) {
                        const float t = tmp2[y * Wp + x];
                        s[y * W + x] = t > floor_at ? t : floor_at;
                    }
                maxq[i] = mq;
                shift[i] = logf(mq) - mx;
            }
            if ((it + 1) % check_every == 0 || it + 1 >= max_iter) {
                float e = 0.f;  /* POT's criterion on v_i K u_i = e_i s_i max q_i */
                if (k == 2) {
                    for (i64 p = 0; p < P; p++) e += fabsf(E[p] * S[p] * maxq[0] - E[P + p] * S[P + p] * maxq[1]);
                    e *= 0.5f;
                } else {
                    for (i64 p = 0; p < P; p++) {
                        float mean = 0.f, var = 0.f;
                        for (i64 i = 0; i < k; i++) mean += E[i * P + p] * S[i * P + p] * maxq[i];
                        mean /= (float)k;
                        for (i64 i = 0; i < k; i++) {
                            const float v = E[i * P + p] * S[i * P + p] * maxq[i] - mean;
                            var += v * v;
                        }
                        e += sqrtf(var / (float)k);
                    }
                }
                err = e;
                int stop = e < tol || it + 1 >= max_iter;
                if (patience > 0) {
                    if (e < 0.99f * best) { best = e; stalled = 0; } else stalled++;
                    stop |= stalled >= patience;
                }
                if (stop) break;
            }
            const float *s_last = S + (k - 1) * P;
            for (i64 j = 0; j < k - 1; j++) {
                const float off = shift[j] - shift[k - 1];
                for (i64 p = 0; p < P; p++) D[j * P + p] = logf(S[j * P + p] / s_last[p]) + off;
            }
            if (k == 2) {
                for (i64 p = 0; p < P; p++) F[p] = -(w_last * D[p] + G[p]);
            } else {
                for (i64 p = 0; p < P; p++) {
                    float wd = 0.f;
                    for (i64 j = 0; j < k - 1; j++) wd += w[j] * D[j * P + p];
                    for (i64 j = 0; j < k - 1; j++) F[j * P + p] = wd - D[j * P + p] - G[j * P + p];
                }
            }
            /* Anderson mixing (type II): y = G + relax F; G <- y - dY gamma, gamma = argmin |F - dF gamma| */
            for (i64 p = 0; p < N; p++) Y[p] = G[p] + rel * F[p];
            if (m == 0 || first) {
                memcpy(f_prev, F, sizeof(float) * N);
                memcpy(y_prev, Y, sizeof(float) * N);
                memcpy(G, Y, sizeof(float) * N);
                first = 0;
                continue;
            }
            const i64 slot = steps % m;
            steps++;
            float *df = dF + slot * N, *dy = dY + slot * N;
            for (i64 p = 0; p < N; p++) {
                df[p] = F[p] - f_prev[p];
                dy[p] = Y[p] - y_prev[p];
            }
            memcpy(f_prev, F, sizeof(float) * N);
            memcpy(y_prev, Y, sizeof(float) * N);
            for (i64 j = 0; j < m; j++) {  /* newest row of the Gram matrix of dF; c_j = dF_j . F, updated */
                const double r = (double)dot(df, dF + j * N, N);
                gram[slot * m + j] = gram[j * m + slot] = r;
                c[j] += r;
            }
            c[slot] = (double)dot(df, F, N);
            const int h = (int)(steps < m ? steps : m);
            double ridge = 0.0;
            for (int j = 0; j < h; j++) ridge += gram[j * m + j];
            ridge = ridge / h > 1e-300 ? ridge / h : 1e-300;
            for (int r = 0; r < h; r++) {
                for (int j = 0; j < h; j++) A[r * h + j] = gram[r * m + j];
                A[r * h + r] += 1e-10 * ridge;
                gamma[r] = c[r];
            }
            if (!solve(h, A, gamma))
                for (int j = 0; j < h; j++) gamma[j] = 0.0;  /* the plain step */
            memcpy(G, Y, sizeof(float) * N);
            for (int j = 0; j < h; j++) {
                const float gj = (float)gamma[j];
                const float *dyj = dY + j * N;
                for (i64 p = 0; p < N; p++) G[p] -= gj * dyj[p];
            }
        }
        memcpy(g_out + grp * k * P, G, sizeof(float) * k * P);
        niter_out[grp] = it + 1;
        err_out[grp] = err;
    }
    free(buf);
    return 0;
}
