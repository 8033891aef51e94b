"""Training algorithms, one module per paper idea: supervised (baseline), dino, bgrpo."""
