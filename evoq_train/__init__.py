"""evoq training plane: GRPO self-evolution with the Thurstone fidelity reward."""
