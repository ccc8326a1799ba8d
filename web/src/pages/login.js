import { api, session } from '../api.js';

export const loginPage = {
  mount(main) {
    main.innerHTML = `
      <section class="login card" aria-labelledby="login-title">
        <h1 id="login-title">Sign in to pgfleet</h1>
        <p>Paste an API token (<code>pgfleet-controller token create --role=viewer|operator</code>,
          or the bootstrap token). It is kept in this tab only.</p>
        <form id="login-form" novalidate>
          <label for="token">API token</label>
          <input id="token" name="token" type="password" autocomplete="off" spellcheck="false"
                 required aria-describedby="login-error">
          <p id="login-error" class="error" role="alert"></p>
          <button type="submit">Sign in</button>
        </form>
      </section>`;
    const form = main.querySelector('#login-form');
    const input = main.querySelector('#token');
    const error = main.querySelector('#login-error');
    input.focus();
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const token = input.value.trim();
      if (!token) { error.textContent = 'Enter a token.'; return; }
      error.textContent = '';
      try {
        const who = await api.whoAmI(token);
        session.save(token, who);
        location.hash = '#/';
      } catch (e) {
        error.textContent = e.status === 401 ? 'That token is not valid.' : `Sign-in failed: ${e.message}`;
        input.setAttribute('aria-invalid', 'true');
      }
    });
    return { title: 'Sign in' };
  },
};
