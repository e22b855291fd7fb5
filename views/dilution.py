"""Score dilution: as the text grows, each query's attention spreads over more keys.
Curves over prefixes of the text, a passage and a later question of real text pulled apart,
a planted needle on synthetic vectors against its exact theory, attention sinks, and the
remedies (length-scaled softmax, Llama 4's temperature tuning) on all of them."""
from ui import dilution, document, settings

settings.declare(*dilution.SETTINGS)

run = document.require()
dilution.header()
picked = dilution.choose(run)
dilution.prefixes(picked)
dilution.reference(picked.remedy)
dilution.passage_and_question(picked)
dilution.needle(picked)
dilution.sinks(picked)
