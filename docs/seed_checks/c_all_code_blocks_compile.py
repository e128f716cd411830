"""Do the seeds' Python code blocks even compile?  (ast.parse; no TF needed)"""
import ast, re, glob, os, sys
# The seed articles are not part of the repository: pass their folder, or set COURSE_SEEDS.
SEEDS = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("COURSE_SEEDS")
if not SEEDS or not os.path.isdir(SEEDS):
    sys.exit("usage: python c_all_code_blocks_compile.py SEEDS_DIR (the folder holding 01-...md .. 05-...md)")
for f in sorted(glob.glob(os.path.join(SEEDS, "0*.md"))):
    src = open(f, encoding="utf-8").read()
    for k, m in enumerate(re.finditer(r"```python\n(.*?)```", src, re.S)):
        line = src[:m.start()].count("\n") + 2
        try: ast.parse(m.group(1)); msg = "parses"
        except SyntaxError as e: msg = f"{type(e).__name__}: {e.msg} (block line {e.lineno})"
        print(f"{os.path.basename(f)} block {k} (md line {line}): {msg}")

# names that are read but never defined anywhere in the block (crude pyflakes)
import builtins
print("\nundefined names per block:")
for f in sorted(glob.glob(os.path.join(SEEDS, "0[2-5]*.md"))):
    src = open(f, encoding="utf-8").read()
    for k, m in enumerate(re.finditer(r"```python\n(.*?)```", src, re.S)):
        code = m.group(1)
        try: tree = ast.parse(code)
        except SyntaxError: tree = ast.parse(code.replace("        # ...\n\n# 定义优化器", "        pass\n\n# 定义优化器", 1)
                                             .replace("        # ...\n\n    def forward", "        pass\n\n    def forward"))
        defined, used = set(dir(builtins)), []
        for n in ast.walk(tree):
            if isinstance(n, ast.Name):
                (defined.add(n.id) if isinstance(n.ctx, ast.Store) else used.append((n.lineno, n.id)))
            elif isinstance(n, (ast.FunctionDef, ast.ClassDef)): defined.add(n.name); defined.update(a.arg for a in n.args.args) if isinstance(n, ast.FunctionDef) else None
            elif isinstance(n, (ast.Import, ast.ImportFrom)): defined.update((a.asname or a.name).split(".")[0] for a in n.names)
            elif isinstance(n, ast.arg): defined.add(n.arg)
        first_use = {}
        for ln, name in used: first_use[name] = min(ln, first_use.get(name, ln))
        undef = sorted(n for n in first_use if n not in defined)
        # names used before their first assignment
        assigned_at = {}
        for n in ast.walk(tree):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store): assigned_at.setdefault(n.id, n.lineno); assigned_at[n.id] = min(assigned_at[n.id], n.lineno)
        args = {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)}
        early = sorted(n for n, ln in first_use.items() if n in assigned_at and ln < assigned_at[n] and n not in dir(builtins) and n not in args)
        print(f"  {os.path.basename(f)} block {k}: undefined={undef}  used-before-assignment(top level)={early}")
