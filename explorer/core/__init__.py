"""The base layer: devices, checks, query rows, exact attention rows, pooling, segmentations,
the Doc and what makes one (encoding a text, synthetic vectors, sample texts), and the
streamed statistics pass. Imports nothing else of explorer.

OpenMP's threads wait for work asleep, not spinning (OMP_WAIT_POLICY=PASSIVE, unless set): set here,
before torch loads OpenMP. Spinning threads take the cores the working ones need whenever the
machine has more runnable threads than cores (other jobs, or several visitors at once): on a shared
2-core CPU the statistics pass at n = 16k took 25.7 s spinning and 3.7 s passive, SDPA 2.0 s and 1.1 s.
Where the cores are idle, the difference is a wake-up per parallel call (microseconds)."""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
