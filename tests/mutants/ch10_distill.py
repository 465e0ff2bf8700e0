"""Plausible wrong answers to Chapter 10's exercises. Each must fail at least one graded check.

Every mutant starts from the reference answer and changes one thing a student might get wrong.
"""
import torch
import torch.nn.functional as F


# ---------------------------------------------------------------- 10.1
def kl_reversed(teacher_logits, student_logits, temperature=1.0):
    log_p = F.log_softmax(teacher_logits.float() / temperature, -1)
    log_q = F.log_softmax(student_logits.float() / temperature, -1)
    return (log_q.exp() * (log_q - log_p)).sum(-1).mean() * temperature ** 2


def kl_no_t_squared(teacher_logits, student_logits, temperature=1.0):
    log_p = F.log_softmax(teacher_logits.float() / temperature, -1)
    log_q = F.log_softmax(student_logits.float() / temperature, -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def kl_log_of_softmax(teacher_logits, student_logits, temperature=1.0):
    p = torch.softmax(teacher_logits.float() / temperature, -1)
    q = torch.softmax(student_logits.float() / temperature, -1)
    return (p * (torch.log(p) - torch.log(q))).sum(-1).mean() * temperature ** 2


def kl_sum_over_tokens(teacher_logits, student_logits, temperature=1.0):
    log_p = F.log_softmax(teacher_logits.float() / temperature, -1)
    log_q = F.log_softmax(student_logits.float() / temperature, -1)
    return (log_p.exp() * (log_p - log_q)).sum() * temperature ** 2


def kl_temperature_on_student_only(teacher_logits, student_logits, temperature=1.0):
    log_p = F.log_softmax(teacher_logits.float(), -1)
    log_q = F.log_softmax(student_logits.float() / temperature, -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean() * temperature ** 2


def kl_torch_kl_div_wrong_order(teacher_logits, student_logits, temperature=1.0):
    # F.kl_div(input, target) expects input = log q (student), target = p (teacher)
    log_p = F.log_softmax(teacher_logits.float() / temperature, -1)
    q = torch.softmax(student_logits.float() / temperature, -1)
    return F.kl_div(log_p, q, reduction="sum") / log_p[..., 0].numel() * temperature ** 2


def kl_cross_entropy(teacher_logits, student_logits, temperature=1.0):
    # cross-entropy H(p, q) = KL + H(p): not zero for identical logits
    log_p = F.log_softmax(teacher_logits.float() / temperature, -1)
    log_q = F.log_softmax(student_logits.float() / temperature, -1)
    return -(log_p.exp() * log_q).sum(-1).mean() * temperature ** 2


# ---------------------------------------------------------------- 10.2
def _freeze(model, test):
    names = []
    for name, p in model.named_parameters():
        keep = test(name)
        p.requires_grad_(keep)
        if keep:
            names.append(name)
    return sorted(names)


def freeze_substring(model, mode="attention"):
    # "attention" in name also matches post_attention_layernorm
    return _freeze(model, lambda n: "attention" in n and not (mode == "new" and (".query_key_value." in n
                                                                                   or ".dense." in n)))


def freeze_new_keeps_dense(model, mode="attention"):
    def test(n):
        p = n.split(".")
        ok = len(p) > 3 and p[0] == "layers" and p[2] == "attention"
        return ok and not (mode == "new" and p[3] == "query_key_value")
    return _freeze(model, test)


def freeze_ignores_mode(model, mode="attention"):
    return _freeze(model, lambda n: n.split(".")[2:3] == ["attention"] and n.startswith("layers."))


def freeze_only_turns_off(model, mode="attention"):
    names = []
    for name, p in model.named_parameters():
        parts = name.split(".")
        keep = len(parts) > 3 and parts[0] == "layers" and parts[2] == "attention"
        if keep and mode == "new" and parts[3] in ("query_key_value", "dense"):
            keep = False
        if not keep:
            p.requires_grad_(False)
        else:
            names.append(name)
    return sorted(names)


def freeze_unsorted(model, mode="attention"):
    names = []
    for name, p in model.named_parameters():
        parts = name.split(".")
        keep = len(parts) > 3 and parts[0] == "layers" and parts[2] == "attention"
        if keep and mode == "new" and parts[3] in ("query_key_value", "dense"):
            keep = False
        p.requires_grad_(keep)
        if keep:
            names.append(name)
    return names[::-1]


# ---------------------------------------------------------------- 10.3
def _allowed(g, causal):
    a = torch.ones(g.shape[-2:], dtype=torch.bool)
    return (a.tril() if causal else a).expand(g.shape)


def l1_all_pairs(gates, lam, causal=True):
    return lam * gates.abs().mean()


def l1_zeroes_future_but_divides_by_all(gates, lam, causal=True):
    a = _allowed(gates, causal)
    return lam * torch.where(a, gates.abs(), torch.zeros_like(gates)).sum() / gates.numel()


def l1_sum(gates, lam, causal=True):
    a = _allowed(gates, causal)
    return lam * torch.where(a, gates.abs(), torch.zeros_like(gates)).sum()


def l1_no_lambda(gates, lam, causal=True):
    a = _allowed(gates, causal)
    return torch.where(a, gates.abs(), torch.zeros_like(gates)).sum() / a.sum()


def l1_always_causal(gates, lam, causal=True):
    a = _allowed(gates, True)
    return lam * torch.where(a, gates.abs(), torch.zeros_like(gates)).sum() / a.sum()


# ---------------------------------------------------------------- 10.4
def density_ge(gates, threshold=0.5, causal=True):
    a = _allowed(gates, causal)
    return float((a & (gates >= threshold)).sum()) / float(a.sum())


def density_all_pairs(gates, threshold=0.5, causal=True):
    return float((gates > threshold).sum()) / gates.numel()


def density_counts_future(gates, threshold=0.5, causal=True):
    a = _allowed(gates, causal)
    return float((gates > threshold).sum()) / float(a.sum())


def kl_in_input_dtype(teacher_logits, student_logits, temperature=1.0):
    """Right formula, computed in the logits' dtype: bfloat16 keeps 3 significant digits."""
    log_p = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    log_q = F.log_softmax(student_logits / temperature, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean() * temperature ** 2


MUTANTS = {
    "10.1": [kl_reversed, kl_no_t_squared, kl_log_of_softmax, kl_sum_over_tokens, kl_temperature_on_student_only,
             kl_torch_kl_div_wrong_order, kl_cross_entropy, kl_in_input_dtype],
    "10.2": [freeze_substring, freeze_new_keeps_dense, freeze_ignores_mode, freeze_only_turns_off, freeze_unsorted],
    "10.3": [l1_all_pairs, l1_zeroes_future_but_divides_by_all, l1_sum, l1_no_lambda, l1_always_causal],
    "10.4": [density_ge, density_all_pairs, density_counts_future],
}
