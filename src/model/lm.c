#include "model/lm.h"

const char *qs_linear_name(qs_linear_kind kind) {
  static const char *const names[QS_LIN_COUNT] = {
      "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"};
  return (kind >= 0 && kind < QS_LIN_COUNT) ? names[kind] : "?";
}

const qs_bf16 *qs_lm_linear_weight(const qs_lm *lm, int layer, qs_linear_kind kind, int *out, int *in) {
  const qs_lm_config *c = &lm->cfg;
  const qs_lm_layer *l = (kind == QS_LIN_LM_HEAD) ? NULL : &lm->layer[layer];
  int q = c->heads * c->head_dim, kv = c->kv_heads * c->head_dim;
  switch (kind) {
    case QS_LIN_Q: *out = q; *in = c->hidden; return l->q;
    case QS_LIN_K: *out = kv; *in = c->hidden; return l->k;
    case QS_LIN_V: *out = kv; *in = c->hidden; return l->v;
    case QS_LIN_O: *out = c->hidden; *in = q; return l->o;
    case QS_LIN_GATE: *out = c->intermediate; *in = c->hidden; return l->gate;
    case QS_LIN_UP: *out = c->intermediate; *in = c->hidden; return l->up;
    case QS_LIN_DOWN: *out = c->hidden; *in = c->intermediate; return l->down;
    case QS_LIN_LM_HEAD: *out = c->vocab; *in = c->hidden; return lm->lm_head;
    default: *out = *in = 0; return NULL;
  }
}

void qs_lm_release(qs_lm *lm) {
  if (lm && lm->release) lm->release(lm);
}
