// Typeset the maths of every page with the vendored KaTeX (docs/assets/katex/). pymdownx.arithmatex
// (generic mode) leaves \( ... \) and \[ ... \] in <span class="arithmatex"> / <div class="arithmatex">.
function renderMath(root) {
  for (const el of root.querySelectorAll(".arithmatex")) {
    renderMathInElement(el, {
      delimiters: [
        { left: "\\[", right: "\\]", display: true },
        { left: "\\(", right: "\\)", display: false },
      ],
      throwOnError: false,
    });
  }
}

if (typeof document$ !== "undefined") {
  document$.subscribe(({ body }) => renderMath(body)); // mkdocs-material, also after instant navigation
} else {
  document.addEventListener("DOMContentLoaded", () => renderMath(document.body));
}
