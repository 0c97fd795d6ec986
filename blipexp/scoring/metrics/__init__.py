"""Caption metrics (scores.py), computed by the local `evaluate` module in modules/caption_metrics/; their names
and directions are experiment/metric_keys.py's table."""
from .scores import (
    CIDER_DF_AUTO_MIN_IMAGES,
    CIDER_DF_SETTINGS,
    DocumentFrequency,
    ImageScores,
    caption_scores,
    corpus_document_frequency,
    normalize_caption,
    resolve_cider_df,
    score_images,
)

__all__ = ["CIDER_DF_AUTO_MIN_IMAGES", "CIDER_DF_SETTINGS", "DocumentFrequency", "ImageScores", "caption_scores",
           "corpus_document_frequency", "normalize_caption", "resolve_cider_df", "score_images"]
