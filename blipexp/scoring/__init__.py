"""Numbers about captions and how sure they are: the caption metrics, a split scored as the model is served,
bootstrap intervals and paired tests, the evaluation cache, and evaluating or comparing models on a split.
Imports runtime, experiment, data, model."""
