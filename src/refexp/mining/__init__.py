"""Region-pair mining for the expressional-region-retrieval benchmark (GRN paper, issue 4)."""
from refexp.mining.pairs import PAIR_COLUMNS, BleuStep, bleu_pairs, mine_pairs

__all__ = ["PAIR_COLUMNS", "BleuStep", "bleu_pairs", "mine_pairs"]
