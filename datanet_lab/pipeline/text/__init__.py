"""The steps of a text run, as notebook 07 calls them: the tabular steps' contract (manifests,
ledger records, reuse) on a text Datanet and the MiniLM models.

A text run lives in ``<run>/text/`` (:func:`text_run`) with its own manifests, keystore and
ledger. Its layout::

    ledger.sqlite  payouts.csv  metrics.json  comparison.csv  backdoor.csv  ceiling.json  figures/*.png
    results.json (from `datanet-lab run --text`: the figures the README quotes)
    manifests/   build.json encode.json train.json attribute.json pay.json
    dataset/     meta.json decisions.csv train.jsonl test.jsonl     (what validators accepted)
    planted/     ground_truth.csv                                   (the scenario's truth, kept apart)
    features/    encoded.npz    (frozen encoder: top-layer inputs, masks, sentence embeddings)
    training/    history.csv models.csv checkpoints/epoch_NNN.pt   (fine-tuned top layer + head)
    attribution/ scores.npy sample_credit.csv contributor_credit.csv token_ig.npz
"""

from datanet_lab.pipeline.text.attribute_step import Explained, TextAttribution, attribute_text, explain, score_text
from datanet_lab.pipeline.text.build_step import BuiltText, build_text, planted_text_datanet, text_run
from datanet_lab.pipeline.text.pay_step import pay_text
from datanet_lab.pipeline.text.train_step import Encoded, TrainedText, encode_text, frozen_datanet, train_text

__all__ = ["BuiltText", "Encoded", "Explained", "TextAttribution", "TrainedText", "attribute_text", "build_text",
           "encode_text", "explain", "frozen_datanet", "pay_text", "planted_text_datanet", "score_text", "text_run",
           "train_text"]
