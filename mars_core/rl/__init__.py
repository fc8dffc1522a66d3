"""MARS-Sep as reinforcement learning: Beta mask policy, advantages, clipped PPO loss."""
