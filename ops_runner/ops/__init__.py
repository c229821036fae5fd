"""Operations: the tick and its schedule, the job registry, checks, incidents, backup, drill."""
