/* Minimum-energy labellings of 4-connected grids, a batch of independent problems per call: the compiled CPU
 * solver of mixlab.ot.graphcut (PuzzleMix's and Co-Mixup's mixing masks). Plain C11, no Python headers;
 * compiled on first use by mixlab/ot/native.py and called through ctypes.
 *
 * Every problem g has nodes p = r * w + c of an h x w grid, labels 0..L-1 and the energy
 *     E(l) = sum_p U[p, l_p] + sum_{grid edges pq} w_pq V(l_p, l_q)
 * with int64 unary costs U, edge weights w_pq >= 0 (vertical edges wv (h-1, w), then horizontal wh (h, w-1))
 * and label costs V >= 0, V(a, a) = 0, V symmetric.
 *
 * mixlab_grid_convex: V(a, b) = (a - b)^2. Exact, by one minimum cut (Ishikawa 2003): binary variables
 *   b_pk = [l_p >= k], k = 1..L-1, with l_p = sum_k b_pk and b_p,k+1 <= b_pk (infinite arcs). Then
 *   U[p, l_p] = U[p, 0] + sum_k b_pk (U[p, k] - U[p, k-1]),  l_p^2 = sum_k b_pk (2k - 1)  and
 *   -2 w l_p l_q = sum_{i,j} (-2 w b_pi + 2 w b_pi (1 - b_qj)),
 *   so w (l_p - l_q)^2 is unary terms plus arcs (p,i) -> (q,j) of capacity 2w: submodular, one cut.
 * mixlab_grid_swap: any such V (a semi-metric), by alpha-beta swap moves (Boykov, Veksler, Zabih 2001), the
 *   move-making algorithm gco's "swap" runs: cycles over label pairs (a < b) in order; each move relabels the
 *   nodes labelled a or b optimally between a and b (one minimum cut) and is kept if it lowers the energy;
 *   stop after a cycle without improvement or max_cycles cycles. A local minimum, not a global one.
 *
 * Convention of every cut: a binary variable is 1 where its node is on the source side, and the cut taken is
 * the smallest minimum cut (the nodes reachable from the source in the residual graph of a maximum flow). That
 * set does not depend on how the maximum flow was found, so the scipy fallback in graphcut.py returns the same
 * labels. Maximum flow: Dinic's algorithm with an iterative depth-first search.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int64_t i64;
typedef int32_t i32;

enum { SRC = 0, SNK = 1 };

typedef struct {
    i64 n, m;
    i32 *head, *next, *to, *level, *iter, *queue, *stack;
    i64 *cap;
    char *in_s;
} Net;

static void net_free(Net *g) {
    free(g->head); free(g->next); free(g->to); free(g->level); free(g->iter); free(g->queue); free(g->stack);
    free(g->cap); free(g->in_s);
}

static int net_alloc(Net *g, i64 max_n, i64 max_m) {
    memset(g, 0, sizeof(*g));
    g->head = malloc(max_n * sizeof(i32)); g->level = malloc(max_n * sizeof(i32));
    g->iter = malloc(max_n * sizeof(i32)); g->queue = malloc(max_n * sizeof(i32));
    g->stack = malloc(max_n * sizeof(i32)); g->in_s = malloc(max_n);
    g->next = malloc(max_m * sizeof(i32)); g->to = malloc(max_m * sizeof(i32)); g->cap = malloc(max_m * sizeof(i64));
    if (!g->head || !g->level || !g->iter || !g->queue || !g->stack || !g->in_s || !g->next || !g->to || !g->cap) {
        net_free(g);
        return 1;
    }
    return 0;
}

static void net_reset(Net *g, i64 n) {
    g->n = n;
    g->m = 0;
    for (i64 i = 0; i < n; i++) g->head[i] = -1;
}

/* arc u -> v of capacity c and its reverse v -> u of capacity rc */
static void arc(Net *g, i32 u, i32 v, i64 c, i64 rc) {
    i64 e = g->m;
    g->to[e] = v; g->cap[e] = c; g->next[e] = g->head[u]; g->head[u] = (i32)e;
    g->to[e + 1] = u; g->cap[e + 1] = rc; g->next[e + 1] = g->head[v]; g->head[v] = (i32)(e + 1);
    g->m += 2;
}

static int levels(Net *g) {
    for (i64 i = 0; i < g->n; i++) g->level[i] = -1;
    i64 lo = 0, hi = 0;
    g->level[SRC] = 0;
    g->queue[hi++] = SRC;
    while (lo < hi) {
        i32 u = g->queue[lo++];
        for (i32 e = g->head[u]; e >= 0; e = g->next[e])
            if (g->cap[e] > 0 && g->level[g->to[e]] < 0) {
                g->level[g->to[e]] = g->level[u] + 1;
                g->queue[hi++] = g->to[e];
            }
    }
    return g->level[SNK] >= 0;
}

/* a blocking flow of the level graph, one augmenting path at a time */
static void blocking_flow(Net *g) {
    for (;;) {
        i64 top = 0;
        i32 u = SRC;
        while (u != SNK) {
            i32 e = g->iter[u];
            while (e >= 0 && !(g->cap[e] > 0 && g->level[g->to[e]] == g->level[u] + 1)) e = g->next[e];
            g->iter[u] = e;
            if (e < 0) {  /* dead end: retreat one arc */
                g->level[u] = -1;
                if (top == 0) return;
                e = g->stack[--top];
                u = g->to[e ^ 1];
                g->iter[u] = g->next[e];
                continue;
            }
            g->stack[top++] = e;
            u = g->to[e];
        }
        i64 f = g->cap[g->stack[0]];
        for (i64 i = 1; i < top; i++)
            if (g->cap[g->stack[i]] < f) f = g->cap[g->stack[i]];
        for (i64 i = 0; i < top; i++) {
            g->cap[g->stack[i]] -= f;
            g->cap[g->stack[i] ^ 1] += f;
        }
    }
}

/* maximum flow; then in_s[v] = 1 for the nodes reachable from the source in the residual graph (the levels of
 * the last search, which found the sink unreachable) */
static void min_cut(Net *g) {
    while (levels(g)) {
        memcpy(g->iter, g->head, g->n * sizeof(i32));
        blocking_flow(g);
    }
    for (i64 v = 0; v < g->n; v++) g->in_s[v] = g->level[v] >= 0;
}

/* the grid's edges: vertical (r, c)-(r+1, c) weights wv[r * w + c], then horizontal (r, c)-(r, c+1) wh[r * (w-1) + c] */
static void grid_edges(i64 h, i64 w, i32 *ep, i32 *eq) {
    i64 k = 0;
    for (i64 r = 0; r + 1 < h; r++)
        for (i64 c = 0; c < w; c++, k++) { ep[k] = (i32)(r * w + c); eq[k] = (i32)((r + 1) * w + c); }
    for (i64 r = 0; r < h; r++)
        for (i64 c = 0; c + 1 < w; c++, k++) { ep[k] = (i32)(r * w + c); eq[k] = (i32)(r * w + c + 1); }
}

/* returns 0, or 1 if memory ran out */
int mixlab_grid_convex(i64 G, i64 h, i64 w, i64 L, const i64 *U, const i64 *wv, const i64 *wh, i32 *labels) {
    const i64 V = h * w, K = L - 1, E = (h - 1) * w + h * (w - 1);
    if (K < 1) {
        memset(labels, 0, G * V * sizeof(i32));
        return 0;
    }
    Net g;
    i32 *ep = malloc((E + 1) * sizeof(i32)), *eq = malloc((E + 1) * sizeof(i32));
    i64 *coef = malloc(V * K * sizeof(i64)), *we = malloc((E + 1) * sizeof(i64));
    if (!ep || !eq || !coef || !we || net_alloc(&g, 2 + V * K, 2 * (V * K + V * (K - 1) + E * K * K))) {
        free(ep); free(eq); free(coef); free(we);
        return 1;
    }
    grid_edges(h, w, ep, eq);
    for (i64 b = 0; b < G; b++) {
        const i64 *u = U + b * V * L;
        for (i64 k = 0; k < (h - 1) * w; k++) we[k] = wv[b * (h - 1) * w + k];
        for (i64 k = 0; k < h * (w - 1); k++) we[(h - 1) * w + k] = wh[b * h * (w - 1) + k];
        for (i64 p = 0; p < V; p++)
            for (i64 k = 0; k < K; k++) coef[p * K + k] = u[p * L + k + 1] - u[p * L + k];
        net_reset(&g, 2 + V * K);
        i64 total = 0;
        for (i64 e = 0; e < E; e++) {
            const i64 wt = we[e];
            if (wt <= 0) continue;
            for (i64 k = 0; k < K; k++) {
                coef[ep[e] * K + k] += wt * (2 * k + 1 - 2 * K);
                coef[eq[e] * K + k] += wt * (2 * k + 1);
            }
            for (i64 i = 0; i < K; i++)
                for (i64 j = 0; j < K; j++) arc(&g, (i32)(2 + ep[e] * K + i), (i32)(2 + eq[e] * K + j), 2 * wt, 0);
            total += 2 * wt * K * K;
        }
        for (i64 v = 0; v < V * K; v++) {
            if (coef[v] > 0) arc(&g, (i32)(2 + v), SNK, coef[v], 0);
            else if (coef[v] < 0) arc(&g, SRC, (i32)(2 + v), -coef[v], 0);
            total += coef[v] > 0 ? coef[v] : -coef[v];
        }
        for (i64 p = 0; p < V; p++)  /* b_p,k+1 <= b_pk: never (p, k+1) on the source side with (p, k) on the sink's */
            for (i64 k = 1; k < K; k++) arc(&g, (i32)(2 + p * K + k), (i32)(2 + p * K + k - 1), total + 1, 0);
        min_cut(&g);
        for (i64 p = 0; p < V; p++) {
            i32 l = 0;
            for (i64 k = 0; k < K; k++) l += g.in_s[2 + p * K + k];
            labels[b * V + p] = l;
        }
    }
    net_free(&g); free(ep); free(eq); free(coef); free(we);
    return 0;
}

static i64 swap_energy(i64 V, i64 E, i64 L, const i64 *u, const i64 *vl, const i32 *ep, const i32 *eq, const i64 *we,
                       const i32 *lab) {
    i64 s = 0;
    for (i64 p = 0; p < V; p++) s += u[p * L + lab[p]];
    for (i64 e = 0; e < E; e++) s += we[e] * vl[lab[ep[e]] * L + lab[eq[e]]];
    return s;
}

/* labels: the starting labelling in, the result out; cycles: the cycles each problem ran (the last one found no
 * improvement unless max_cycles stopped it). Returns 0, or 1 if memory ran out. */
int mixlab_grid_swap(i64 G, i64 h, i64 w, i64 L, const i64 *U, const i64 *VL, const i64 *wv, const i64 *wh,
                     i32 *labels, i64 max_cycles, i64 *cycles) {
    const i64 V = h * w, E = (h - 1) * w + h * (w - 1);
    Net g;
    i32 *ep = malloc((E + 1) * sizeof(i32)), *eq = malloc((E + 1) * sizeof(i32));
    i32 *node = malloc(V * sizeof(i32)), *cand = malloc(V * sizeof(i32));
    i64 *we = malloc((E + 1) * sizeof(i64)), *c0 = malloc(V * sizeof(i64)), *c1 = malloc(V * sizeof(i64));
    if (!ep || !eq || !node || !cand || !we || !c0 || !c1 || net_alloc(&g, 2 + V, 2 * (2 * V + E))) {
        free(ep); free(eq); free(node); free(cand); free(we); free(c0); free(c1);
        return 1;
    }
    grid_edges(h, w, ep, eq);
    for (i64 b = 0; b < G; b++) {
        const i64 *u = U + b * V * L, *vl = VL + b * L * L;
        i32 *lab = labels + b * V;
        for (i64 k = 0; k < (h - 1) * w; k++) we[k] = wv[b * (h - 1) * w + k];
        for (i64 k = 0; k < h * (w - 1); k++) we[(h - 1) * w + k] = wh[b * h * (w - 1) + k];
        i64 energy = swap_energy(V, E, L, u, vl, ep, eq, we, lab), cycle = 0;
        int improved = 1;
        while (improved && cycle < max_cycles) {
            improved = 0;
            cycle++;
            for (i32 la = 0; la < L; la++)
                for (i32 lb = la + 1; lb < L; lb++) {
                    i64 active = 0;
                    for (i64 p = 0; p < V; p++) {
                        node[p] = (lab[p] == la || lab[p] == lb) ? (i32)(2 + active++) : -1;
                        if (node[p] >= 0) { c0[p] = u[p * L + la]; c1[p] = u[p * L + lb]; }
                    }
                    if (!active) continue;
                    net_reset(&g, 2 + active);
                    const i64 vab = vl[la * L + lb];
                    for (i64 e = 0; e < E; e++) {
                        const i32 p = ep[e], q = eq[e];
                        if (node[p] >= 0 && node[q] >= 0) {
                            if (we[e] * vab > 0) arc(&g, node[p], node[q], we[e] * vab, we[e] * vab);
                        } else if (node[p] >= 0) {
                            c0[p] += we[e] * vl[la * L + lab[q]];
                            c1[p] += we[e] * vl[lb * L + lab[q]];
                        } else if (node[q] >= 0) {
                            c0[q] += we[e] * vl[la * L + lab[p]];
                            c1[q] += we[e] * vl[lb * L + lab[p]];
                        }
                    }
                    for (i64 p = 0; p < V; p++) {  /* label b (source side) costs c1, label a costs c0 */
                        if (node[p] < 0) continue;
                        const i64 lo = c0[p] < c1[p] ? c0[p] : c1[p];
                        if (c0[p] > lo) arc(&g, SRC, node[p], c0[p] - lo, 0);
                        if (c1[p] > lo) arc(&g, node[p], SNK, c1[p] - lo, 0);
                    }
                    min_cut(&g);
                    for (i64 p = 0; p < V; p++) cand[p] = node[p] < 0 ? lab[p] : (g.in_s[node[p]] ? lb : la);
                    const i64 e_new = swap_energy(V, E, L, u, vl, ep, eq, we, cand);
                    if (e_new < energy) {
                        energy = e_new;
                        memcpy(lab, cand, V * sizeof(i32));
                        improved = 1;
                    }
                }
        }
        cycles[b] = cycle;
    }
    net_free(&g); free(ep); free(eq); free(node); free(cand); free(we); free(c0); free(c1);
    return 0;
}
