// Applies the stored theme before the page paints (no flash); app.js owns the toggle.
(function () {
  try {
    var theme = localStorage.getItem("livecode.theme");
    if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
  } catch (error) {
    // storage disabled: follow the system
  }
})();
