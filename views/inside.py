"""Inside the model: mechanisms swapped into the model's own layers, and what it then predicts
(StreamingLLM's table, the loss along the text, the predictions hurt most, layer by layer)."""
from ui import document, inside, settings

settings.declare(*inside.SETTINGS)

run = document.require()
inside.header()
lm = inside.causal_model(run.encoding, "to swap a mechanism into its layers")
swaps, layers, tokens = inside.choose(lm)
effects = inside.scores(run.encoding, tokens, swaps, layers)
if effects:
    text = run.encoding.text
    inside.table(effects, lm.layers)
    inside.along(effects, swaps, text)
    inside.hurt(effects, swaps, text, len(lm.prefix), run.doc.layer, run.head)
    inside.by_layer(run.encoding, tokens, swaps, lm, effects[0].perplexity_dense)
