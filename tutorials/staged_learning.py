# %% [markdown]
# # Staged learning
# placeholder

# %%
print(1)
